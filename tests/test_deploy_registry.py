"""Transports by registry: the runtime finds a transport by name (built in or an installed package's entry point)
and imports none of them itself."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from robolearn.deploy.profile import load_profile
from robolearn.deploy.transports import make_robot, transport_names
from robolearn.errors import ConfigError
from robolearn.twin.sim_robot import SimRobot

PLUGIN = '''
from robolearn.twin.sim_robot import SimRobot

def robot_from_profile(profile):
    robot = SimRobot(profile.model, 1.0 / profile.control_hz, joint_names=profile.joint_names)
    robot.made_by = "mybus"
    return robot
'''


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    """An installed package `mybus` that registers the `mybus` transport (a real dist-info on sys.path)."""
    (tmp_path / "mybus.py").write_text(PLUGIN)
    info = tmp_path / "mybus-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mybus\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[robolearn.transports]\nmybus = mybus:robot_from_profile\n"
                                           "sim = mybus:robot_from_profile\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("mybus", None)


def test_a_package_adds_a_transport_by_entry_point(plugin_on_path):
    profile = load_profile("go2")
    assert "mybus" in transport_names() and {"sim", "dds", "ros2"} <= set(transport_names())
    robot = make_robot(profile, "mybus")
    assert robot.made_by == "mybus" and robot.joint_names == profile.joint_names
    # a plug-in cannot take over a built-in name
    assert not hasattr(make_robot(profile, "sim"), "made_by")


def test_the_sim_transport_is_the_profiles_twin():
    profile = load_profile("go2")
    robot = make_robot(profile, "sim")
    assert isinstance(robot, SimRobot) and robot.joint_names == profile.joint_names
    assert robot.control_dt == pytest.approx(1.0 / profile.control_hz)
    state = robot.read()
    assert state is not None and np.isfinite(state.q).all()


@pytest.mark.parametrize("name, message", [("can", "unknown transport 'can'; valid transports: dds, ros2, sim"),
                                           ("ros2", "runs inside the rclpy node")])
def test_unknown_and_node_only_transports_are_one_line_errors(name, message):
    with pytest.raises(ConfigError, match=message):
        make_robot(load_profile("go2"), name)
