"""The safety layer (robolearn.deploy.safety.SafetyLayer) with the real Go2 and Panda numbers.

Go2: the hardware profile's safety section with the limits and gains of the shipped go2-flat bundle, exactly as
DeployRuntime builds it. Panda: the profile with the limits of the Panda model (URDF) and its declared drive gains,
as the arm teleop builds it. Every expectation is computed from those numbers (kp, kd, torque limit, range,
margin, max_target_rate / control_hz), never read back from the layer under test.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np
import pytest

from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.profile import HardwareProfile, SafetyCfg, load_profile
from robolearn.deploy.safety import SafetyLayer
from robolearn.sim.robots.robot_cfg import load_robot_cfg
from robolearn.sim.robots.urdf_import import resolve_urdf_path, urdf_velocity_limits
from robolearn.sim.scene import robot_info
from robolearn.twin.kinematics import ArmKinematics


@dataclass
class Robot:
    """One robot's real numbers, in the layer's joint order."""

    profile: HardwareProfile
    names: list[str]
    lo: np.ndarray
    hi: np.ndarray
    vel: np.ndarray  # rad/s, before velocity_limit_scale
    torque: np.ndarray  # N m, before torque_limit_scale
    kp: np.ndarray
    kd: np.ndarray
    home: np.ndarray  # a pose inside the range

    @property
    def dt(self) -> float:
        return 1.0 / self.profile.control_hz

    def layer(self, cfg: SafetyCfg | None = None) -> SafetyLayer:
        return SafetyLayer(cfg or self.profile.safety, joint_names=self.names,
                           pos_limits=np.stack([self.lo, self.hi], axis=1), vel_limits=self.vel,
                           torque_limits=self.torque, control_dt=self.dt, legged=self.profile.kind == "legged")


def go2() -> Robot:
    m = load_bundle("go2-flat").manifest
    lo, hi = np.asarray(m.joints.pos_limits, dtype=float).T
    return Robot(load_profile("go2"), list(m.joints.names), lo, hi, np.asarray(m.joints.vel_limits, dtype=float),
                 np.asarray(m.joints.torque_limits, dtype=float), np.asarray(m.joints.kp, dtype=float),
                 np.asarray(m.joints.kd, dtype=float), np.asarray(m.joints.default_pos, dtype=float))


def panda() -> Robot:
    profile = load_profile("panda")
    names = list(profile.joint_names)
    kin = ArmKinematics(profile.model, names)
    cfg = load_robot_cfg(profile.model)
    info = robot_info(kin.model, cfg)
    order = [list(info.joint_names).index(j) for j in names]
    velocity = urdf_velocity_limits(resolve_urdf_path(cfg.urdf, relative_to=cfg.folder))
    lo, hi = info.joint_range[order].T
    return Robot(profile, names, lo, hi, np.array([velocity[j] for j in names]), info.effort_limit[order],
                 info.kp[order], info.kd[order], info.default_joint_pos[order])


ROBOTS = {"go2": go2, "panda": panda}


@pytest.fixture(scope="module", params=list(ROBOTS))
def robot(request) -> Robot:
    r = ROBOTS[request.param]()
    assert np.all(r.lo < r.home) and np.all(r.home < r.hi) and np.all(r.kp > 0) and np.all(r.torque > 0)
    return r


def pd_torque(r: Robot, target: np.ndarray, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
    """What the motor driver applies for a PD target: kp (q* - q) - kd dq (dq* = 0, no feed-forward)."""
    return r.kp * (target - q) - r.kd * dq


@pytest.mark.parametrize("torque_scale", [None, 0.5])
def test_pd_targets_are_clipped_so_the_torque_stays_within_the_limits(robot, torque_scale):
    """Random states and in-range targets (the rate limit kept out of the way: previous = target): the filtered
    target gives |kp (q* - q) - kd dq| <= torque limit * torque_limit_scale; a target already within the limit is
    left alone, one beyond it is moved exactly onto the limit (not further), on the same side."""
    cfg = robot.profile.safety if torque_scale is None else dataclasses.replace(robot.profile.safety,
                                                                               torque_limit_scale=torque_scale)
    limit = robot.torque * cfg.torque_limit_scale
    layer = robot.layer(cfg)
    rng = np.random.default_rng(0)
    clipped_pos = clipped_neg = untouched = 0
    for _ in range(400):
        q = rng.uniform(robot.lo, robot.hi)
        dq = rng.uniform(-0.9, 0.9, len(q)) * robot.vel
        target = rng.uniform(robot.lo, robot.hi)
        safe, reason = layer.filter_targets(target, target.copy(), q, dq, robot.kp, robot.kd)
        assert reason is None
        asked, got = pd_torque(robot, target, q, dq), pd_torque(robot, safe, q, dq)
        assert np.all(np.abs(got) <= limit * (1 + 1e-9) + 1e-9), (asked, got, limit)
        within = np.abs(asked) <= limit
        assert np.allclose(safe[within], target[within], atol=1e-12)
        beyond = ~within
        assert np.allclose(got[beyond], np.sign(asked[beyond]) * limit[beyond], rtol=1e-9, atol=1e-9)
        clipped_pos += int(np.sum(beyond & (asked > 0)))
        clipped_neg += int(np.sum(beyond & (asked < 0)))
        untouched += int(np.sum(within))
    assert clipped_pos > 20 and clipped_neg > 20 and untouched > 20  # both directions and the no-op were exercised


def test_joints_without_stiffness_are_not_torque_clipped(robot):
    """kp = 0 on a joint (a damped joint): its target carries no torque and is only range-clamped and rate-limited."""
    layer = robot.layer()
    kp = robot.kp.copy()
    kp[0] = 0.0
    q = robot.home.copy()
    target = q.copy()
    target[0] = robot.hi[0] - 0.01  # far from q: with kp > 0 this could be a large torque
    safe, reason = layer.filter_targets(target, target.copy(), q, np.zeros_like(q), kp, robot.kd)
    assert reason is None and safe[0] == target[0]


def test_target_rate_is_max_target_rate_times_the_control_period(robot):
    """A target asked far away moves by max_target_rate / control_hz per tick, in the asked direction."""
    layer = robot.layer()
    step = robot.profile.safety.max_target_rate / robot.profile.control_hz  # go2: 20/500, panda: 1/500 rad
    previous = robot.home.copy()
    for sign in (+1, -1):
        target = np.where(sign > 0, robot.hi, robot.lo)  # in range, far from home
        safe, reason = layer.filter_targets(target, previous, previous, np.zeros_like(previous), robot.kp, robot.kd)
        assert reason is None
        assert np.allclose(safe - previous, sign * step, rtol=0, atol=1e-12), (safe - previous, step)
    # Walking toward a target 10.5 steps away takes 11 ticks: 10 full steps, then the half step.
    target = robot.home.copy()
    target[-1] = robot.home[-1] + 10.5 * step
    current = robot.home.copy()
    ticks = 0
    while not np.allclose(current, target, atol=1e-12):
        current, _ = layer.filter_targets(target, current, current, np.zeros_like(current), robot.kp, robot.kd)
        ticks += 1
        assert ticks < 10_000
    assert ticks == 11


def test_slightly_out_of_range_targets_are_clamped_far_ones_trip(robot):
    layer = robot.layer()
    m = robot.profile.safety.target_limit_margin
    for i in (0, len(robot.names) - 1):
        for edge, sign in ((robot.hi, +1), (robot.lo, -1)):
            q = robot.home.copy()
            q[i] = edge[i]  # at the edge, at rest: neither the rate limit nor the torque clip moves the target
            near = q.copy()
            near[i] = edge[i] + sign * 0.9 * m
            safe, reason = layer.filter_targets(near, q.copy(), q, np.zeros_like(q), robot.kp, robot.kd)
            assert reason is None, reason
            assert safe[i] == edge[i] and np.array_equal(np.delete(safe, i), np.delete(q, i))
            far = q.copy()
            far[i] = edge[i] + sign * 1.1 * m
            previous = q.copy()
            safe, reason = layer.filter_targets(far, previous, q, np.zeros_like(q), robot.kp, robot.kd)
            assert reason is not None
            assert re.fullmatch(rf"target {far[i]:.3f} rad for joint {robot.names[i]} is beyond its range "
                                rf"\[{robot.lo[i]:.3f}, {robot.hi[i]:.3f}\] by more than {m:g} rad", reason), reason
            assert np.array_equal(safe, previous)  # on a trip the previous target is kept, nothing new


def test_nan_target_trips(robot):
    layer = robot.layer()
    target = robot.home.copy()
    target[1] = np.nan
    safe, reason = layer.filter_targets(target, robot.home, robot.home, np.zeros_like(robot.home), robot.kp, robot.kd)
    assert reason == f"joint target is NaN/inf for {robot.names[1]}" and np.array_equal(safe, robot.home)


def check(layer: SafetyLayer, r: Robot, q=None, dq=None, quat=None, age_s=0.0, active=True) -> str | None:
    q = r.home if q is None else q
    dq = np.zeros_like(r.home) if dq is None else dq
    if quat is None and r.profile.kind == "legged":
        quat = np.array([1.0, 0.0, 0.0, 0.0])
    return layer.check_state(q, dq, quat, np.zeros(3) if quat is not None else None, age_s, active=active)


def test_joint_speed_over_its_limit_trips(robot):
    layer = robot.layer()
    scale = robot.profile.safety.velocity_limit_scale
    assert check(layer, robot, dq=0.99 * scale * robot.vel) is None
    assert check(layer, robot, dq=-0.99 * scale * robot.vel) is None
    for i in range(len(robot.names)):
        for sign in (+1, -1):
            dq = np.zeros_like(robot.home)
            dq[i] = sign * 1.01 * scale * robot.vel[i]
            reason = check(layer, robot, dq=dq)
            assert reason == (f"joint {robot.names[i]} moves at {dq[i]:.2f} rad/s, over its limit "
                              f"{scale * robot.vel[i]:.2f} rad/s"), reason
    # A halved velocity_limit_scale trips at half the speed.
    half = robot.layer(dataclasses.replace(robot.profile.safety, velocity_limit_scale=0.5 * scale))
    assert check(half, robot, dq=0.6 * scale * robot.vel) is not None
    assert check(half, robot, dq=0.4 * scale * robot.vel) is None


def test_measured_joint_beyond_its_range_trips(robot):
    layer = robot.layer()
    m = robot.profile.safety.joint_limit_margin
    for i in range(len(robot.names)):
        for edge, sign in ((robot.hi, +1), (robot.lo, -1)):
            q = robot.home.copy()
            q[i] = edge[i] + sign * 0.9 * m  # beyond the range, within the margin: tolerated (contact, overshoot)
            assert check(layer, robot, q=q) is None
            q[i] = edge[i] + sign * 1.1 * m
            assert check(layer, robot, q=q) == (f"joint {robot.names[i]} at {q[i]:.3f} rad is beyond its range "
                                                f"[{robot.lo[i]:.3f}, {robot.hi[i]:.3f}] by more than {m:g} rad")
            # Passive (zero torque, nothing commanded) only checks that the state is usable.
            assert check(layer, robot, q=q, active=False) is None


def test_nan_or_stale_state_trips_even_when_passive(robot):
    layer = robot.layer()
    timeout = robot.profile.safety.state_timeout_ms / 1000.0
    for active in (True, False):
        q = robot.home.copy()
        q[2] = np.nan
        assert check(layer, robot, q=q, active=active) == f"robot state has NaN/inf in q ({robot.names[2]})"
        dq = np.zeros_like(q)
        dq[3] = np.inf
        assert check(layer, robot, dq=dq, active=active) == f"robot state has NaN/inf in dq ({robot.names[3]})"
        assert check(layer, robot, age_s=0.9 * timeout, active=active) is None
        reason = check(layer, robot, age_s=1.1 * timeout, active=active)
        assert reason is not None and reason.startswith("robot state is stale")


def test_body_tilt_trips_the_legged_robot_only():
    r = go2()
    layer = r.layer()
    limit = r.profile.safety.max_tilt_deg
    for axis in ((1, 0, 0), (0, 1, 0), (0.6, 0.8, 0)):
        for deg, trips in ((limit - 2, False), (limit + 2, True), (180.0, True)):
            half = math.radians(deg) / 2
            quat = np.array([math.cos(half), *(math.sin(half) * np.asarray(axis))])
            reason = check(layer, r, quat=quat)
            assert (reason is not None) == trips, (axis, deg, reason)
            if trips:
                assert reason == f"body tilted {deg:.0f} deg (limit {limit:g} deg)"
    nan_quat = np.array([1.0, np.nan, 0.0, 0.0])
    assert check(layer, r, quat=nan_quat) == "robot state has NaN/inf in imu quaternion"
    arm = panda()
    upside_down = np.array([0.0, 1.0, 0.0, 0.0])
    assert arm.layer().check_state(arm.home, np.zeros_like(arm.home), upside_down, None, 0.0, active=True) is None
