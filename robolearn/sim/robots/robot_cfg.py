"""Robot declarations (`sim/robots/<name>.yaml`): what to import and how it is actuated."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from robolearn.config import declarations_root, from_dict, load_yaml
from robolearn.errors import ConfigError
from robolearn.sim.robots.urdf_import import CollisionRule

__all__ = ["ActuatorGroup", "RobotCfg", "robot_names", "load_robot_cfg", "match_joints"]


@dataclass(kw_only=True)
class ActuatorGroup:
    """Joint PD position actuators for every joint whose name matches `joints` (regex, full match)."""

    joints: str
    kp: float
    kd: float
    effort_limit: float | None = None  # N m; default: the URDF's effort limit


@dataclass(kw_only=True)
class RobotCfg:
    name: str
    description: str
    urdf: str  # "example-robot-data:<path in robots/>", or a path (relative paths: to the YAML file)
    kind: str = "legged"  # legged | arm
    floating_base: bool = True
    base_link: str | None = None
    init_height: float = 0.0  # m, base height at reset (floating base)
    default_joint_pos: dict[str, float] = field(default_factory=dict)  # joint regex -> rad
    actuators: list[ActuatorGroup] = field(default_factory=list)
    armature: float = 0.0
    joint_damping: float = 0.0
    frictionloss: float = 0.0
    locked_joints: list[str] = field(default_factory=list)
    collision: list[CollisionRule] = field(default_factory=list)
    collide_with: str = "floor"  # floor | none: robot geoms never collide with each other
    gravity_compensation: bool = False  # the real drives cancel gravity (Franka): the model does too
    sites: dict[str, str] = field(default_factory=dict)  # site name -> URDF link
    feet: list[str] = field(default_factory=list)  # site names of the feet (legged)
    end_effector: str | None = None  # site name (arms)
    source: str = ""  # file it was read from (set by the loader)

    def __post_init__(self) -> None:
        if self.kind not in ("legged", "arm"):
            raise ConfigError(f"robot {self.name}: kind must be 'legged' or 'arm', got {self.kind!r}")
        if self.collide_with not in ("floor", "none"):
            raise ConfigError(f"robot {self.name}: collide_with must be 'floor' or 'none', got {self.collide_with!r}")
        for site in [*self.feet, *([self.end_effector] if self.end_effector else [])]:
            if site not in self.sites:
                raise ConfigError(f"robot {self.name}: site {site!r} is used but not declared under 'sites'")
        if not self.actuators:
            raise ConfigError(f"robot {self.name}: at least one actuator group is required")

    @property
    def folder(self) -> Path:
        return Path(self.source).parent if self.source else declarations_root() / "sim" / "robots"


def _robots_dir() -> Path:
    return declarations_root() / "sim" / "robots"


def robot_names() -> list[str]:
    return sorted(p.stem for p in _robots_dir().glob("*.yaml"))


def load_robot_cfg(name_or_path: str) -> RobotCfg:
    """A robot by registered name (`go2`) or by the path of its YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = _robots_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown robot {name_or_path!r}; valid robots: {', '.join(robot_names())}")
    data = load_yaml(path)
    data.setdefault("source", str(path))
    return from_dict(RobotCfg, data, where=str(path))


def match_joints(patterns: dict[str, float], joint_names: list[str], where: str) -> list[float]:
    """Per-joint values from a {regex: value} mapping; every joint must match exactly one pattern."""
    values = []
    for joint in joint_names:
        hits = [v for pattern, v in patterns.items() if re.fullmatch(pattern, joint)]
        if len(hits) != 1:
            found = "no" if not hits else "several"
            raise ConfigError(f"{where}: joint {joint!r} matches {found} patterns of {list(patterns)}")
        values.append(hits[0])
    return values
