"""Real-arm teleop core (ArmTeleop) against the Panda's MuJoCo twin behind the same RobotInterface as hardware:
device twist -> IK -> safety layer -> PD targets; faults damp."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robolearn.deploy.profile import load_profile
from robolearn.teleop.arm_teleop import ArmTeleop
from robolearn.teleop.devices import TeleopCommand
from robolearn.twin.sim_robot import SimRobot


@pytest.fixture
def arm():
    profile = load_profile("panda")
    robot = SimRobot(profile.model, 1.0 / profile.control_hz, joint_names=list(reversed(profile.joint_names)))
    teleop = ArmTeleop(profile, robot, max_speed=0.1)
    yield teleop, robot
    robot.close()


def command(twist=(0, 0, 0), joint_pos=None) -> TeleopCommand:
    return TeleopCommand(twist=np.array([*twist, 0, 0, 0], dtype=float), gripper=0.0, joint_pos=joint_pos,
                         active=True)


def ee(teleop: ArmTeleop) -> np.ndarray:
    return teleop.kin.fk(teleop.last_state.q[teleop.index])


def test_twist_moves_the_end_effector_at_the_set_speed(arm):
    teleop, robot = arm
    teleop.tick(None)
    start = ee(teleop)
    for _ in range(500):  # 1 s at 500 Hz, full +x and half -z
        out = teleop.tick(command((1.0, 0.0, -0.5)))
    for _ in range(250):  # settle
        teleop.tick(command())
    moved = ee(teleop) - start
    assert moved == pytest.approx([0.1, 0.0, -0.05], abs=0.01)
    assert teleop.damped is None and np.all(out.kp > 0)


def test_stale_state_damps_and_latches(arm):
    teleop, robot = arm
    for _ in range(10):
        teleop.tick(command((0.5, 0, 0)))
    robot.inject_fault("stale_state")
    teleop.tick(command((0.5, 0, 0)))  # the last reading the robot will give
    time.sleep(0.05)  # older than the 20 ms watchdog
    out = teleop.tick(command((0.5, 0, 0)))
    assert "stale" in teleop.damped and np.all(out.kp == 0) and np.all(out.kd == teleop.profile.damping_kd)
    robot.inject_fault("none")
    assert np.all(teleop.tick(command()).kp == 0), "latched until reset"
    teleop.reset()
    assert np.all(teleop.tick(command()).kp > 0)


def test_nan_state_damps(arm):
    teleop, robot = arm
    teleop.tick(command())
    robot.inject_fault("nan_state")
    assert np.all(teleop.tick(command()).kp == 0) and "NaN" in teleop.damped


def test_leader_targets_are_rate_limited_and_far_out_of_range_damps(arm):
    teleop, robot = arm
    teleop.tick(None)
    q0 = teleop.target_q.copy()
    goal = q0 + 0.5
    teleop.tick(command(joint_pos=goal))
    # One tick moves every target by max_target_rate / control_hz toward the goal (1 rad/s at 500 Hz: 2 mrad), the
    # expectation from the profile's numbers, not from the layer under test.
    expected = teleop.profile.safety.max_target_rate / teleop.profile.control_hz
    assert expected == pytest.approx(0.002)
    assert np.allclose(teleop.target_q - q0, expected, rtol=0, atol=1e-12), teleop.target_q - q0
    far = q0.copy()
    far[0] = teleop.safety.hi[0] + 1.0
    assert np.all(teleop.tick(command(joint_pos=far)).kp == 0)
    assert "beyond its range" in teleop.damped
