"""Transports by registry: a transport is a name and a factory `(profile) -> RobotInterface`, found by name when a
session starts, so the runtime imports none of them (a robot computer installs only the transport it uses).

Built in: `sim` (the MuJoCo twin in `robolearn.twin`, stepped by the runtime at real time; needs the full install,
`robolearn[train]`) and `dds` (raw DDS: Unitree LowCmd/LowState or ROS 2 JointState over cyclonedds;
`robolearn[deploy]`). The `ros2` transport is the rclpy node (robolearn.ros.node), which owns its
own runtime. A package adds a transport under the `robolearn.transports` entry-point group:

    [project.entry-points."robolearn.transports"]
    mybus = "mypackage.bus:robot_from_profile"
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from robolearn.deploy.interface import RobotInterface
from robolearn.deploy.profile import HardwareProfile
from robolearn.errors import ConfigError, missing_extra

__all__ = ["BUILTIN", "make_robot", "transport_names"]

BUILTIN = {"sim": "robolearn.twin.sim_robot:robot_from_profile", "dds": "robolearn.ros.dds:robot_from_profile"}
ROS2_NODE = ("the ros2 transport runs inside the rclpy node (robolearn.ros.node.run_node): "
             "`robolearn deploy --transport ros2` or `ros2 launch robolearn deploy.launch.py`")


def _registry() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group="robolearn.transports")}
    return {**found, **BUILTIN}  # the built-in names cannot be taken over by a plug-in


def transport_names() -> list[str]:
    return sorted({*_registry(), "ros2"})


def _load(name: str, target: str) -> Callable[[HardwareProfile], RobotInterface]:
    module, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        hint = missing_extra(exc)
        raise ConfigError(f"transport {name!r} ({target}) cannot be imported: {hint or exc}") from exc
    except AttributeError as exc:
        raise ConfigError(f"transport {name!r}: {module} has no {attr!r}") from exc
    return factory


def make_robot(profile: HardwareProfile, transport: str) -> RobotInterface:
    """The `RobotInterface` of `profile`'s robot over `transport`."""
    if transport == "ros2":
        raise ConfigError(ROS2_NODE)
    registry = _registry()
    if transport not in registry:
        raise ConfigError(f"unknown transport {transport!r}; valid transports: {', '.join(transport_names())}")
    return _load(transport, registry[transport])(profile)
