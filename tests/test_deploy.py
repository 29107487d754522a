"""The deploy runtime on the simulated robot, at real time: stand, walk, damp; fault injection; impedance.

The policy is the shipped go2-flat bundle (policies/bundles/go2-flat, exported from the measured run), run
in onnxruntime; the robot is the MuJoCo twin driven with motor-driver PD. Faults are injected into the
real components (the simulated robot's state, the policy's output or timing), never mocked.
"""

from __future__ import annotations

import logging
import re
import threading
import time

import mujoco
import numpy as np
import pytest

from robolearn.config import from_dict, merge, to_dict
from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.controllers import CartesianImpedance
from robolearn.deploy.profile import HardwareProfile, ImpedanceCfg, load_profile
from robolearn.deploy.runtime import DeployRuntime, Mode
from robolearn.deploy.session import make_robot, run_session
from robolearn.errors import BundleError, ConfigError
from robolearn.twin.kinematics import ArmKinematics
from robolearn.twin.sim_robot import SimRobot

GO2 = load_profile("go2")


@pytest.fixture(scope="module")
def bundle():
    return load_bundle("go2-flat")


def fast_profile(**changes) -> HardwareProfile:
    """The go2 profile with a short stand ramp, standing start, and the given overrides."""
    data = merge(to_dict(GO2), {"stand": {"duration_s": 0.1}, "sim": {"start": "standing"}, **changes})
    return from_dict(HardwareProfile, data, where="test profile")


def running(bundle, profile=None, policy=None) -> tuple[DeployRuntime, SimRobot]:
    profile = profile or fast_profile()
    robot = make_robot(profile, "sim")
    rt = DeployRuntime(bundle, profile, robot, policy=policy)
    rt.spin(0.02)
    assert rt.stand() == "stand"
    rt.spin(0.15)
    assert rt.run() == "run"
    rt.spin(0.3)
    assert rt.mode == Mode.RUN, rt.trips
    return rt, robot


def is_damping(robot: SimRobot, kd: float) -> bool:
    cmd = robot._cmd
    return bool(np.all(cmd.kp == 0) and np.allclose(cmd.kd, kd) and np.all(cmd.tau == 0))


def test_stand_up_walk_on_command_and_damp_on_stop(bundle):
    """The whole sequence at real time from a lying robot, with the real profile (2 s ramp)."""
    robot = make_robot(GO2, "sim")
    assert robot.base_pos[2] < 0.13  # lying
    rt = DeployRuntime(bundle, GO2, robot)
    report = run_session(rt, duration=9.0, auto=True, command=[0.5, 0.0, 0.0])
    rt.close()
    assert report["trips"] == [] and report["final_mode"] == "damp"
    walk = report["sim"]
    assert walk["walk_time_s"] > 4.0
    assert 0.35 < walk["walk_mean_speed_m_s"] < 0.65, walk  # commanded 0.5 m/s
    assert walk["final_base_height_m"] < 0.22  # damped down from ~0.3 m
    timing = report["timing"]
    assert 450 < timing["rate_hz"] < 505 and timing["policy_p99_ms"] < 5.0  # real time (slack for a busy machine)
    assert "period_err_p99_ms" in timing


def test_history_student_walks_on_command_through_the_same_runtime():
    """The distilled go2-rough student (rma, 25 stacked frames; policies/bundles/go2-rough-rma) on the twin with the
    real profile: the runtime stacks 25 frames of what the robot measures, the student stands up, walks at the
    commanded speed, then damps."""
    student = load_bundle("go2-rough-rma")
    assert student.manifest.policy.history == 25 and student.manifest.policy.obs_dim == 25 * 45
    rt = DeployRuntime(student, GO2, make_robot(GO2, "sim"))
    report = run_session(rt, duration=9.0, auto=True, command=[0.5, 0.0, 0.0])
    frames = list(rt.observations.frames)
    rt.close()
    assert report["trips"] == [] and report["final_mode"] == "damp"
    assert len(frames) == 25 and not np.allclose(frames[0], frames[-1])  # a moving window, not one frame repeated
    walk = report["sim"]
    assert walk["walk_time_s"] > 4.0
    assert 0.3 < walk["walk_mean_speed_m_s"] < 0.7, walk  # commanded 0.5 m/s


def test_stand_reaches_default_pose_height(bundle):
    robot = make_robot(GO2, "sim")
    rt = DeployRuntime(bundle, GO2, robot)
    rt.spin(0.05)
    rt.stand()
    rt.spin(2.3)
    assert rt.mode == Mode.STAND and rt.stand_progress() == 1.0
    assert robot.base_pos[2] > 0.25
    q = robot.read().q[rt.index]
    assert np.abs(q - rt.default).max() < 0.25
    assert rt.run() == "run"
    rt.close()


def trip_of(rt: DeployRuntime, caplog, words: str):
    assert rt.mode == Mode.DAMP
    assert len(rt.trips) == 1, rt.trips
    trip = rt.trips[0]
    assert words in trip.reason, trip.reason
    assert any("safety trip" in r.message and words in r.message for r in caplog.records)
    return trip


def test_state_messages_stop(bundle, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    rt, robot = running(bundle)
    robot.inject_fault("stale_state")
    stale_since = robot.read().stamp
    rt.spin(0.1)
    trip = trip_of(rt, caplog, "robot state is stale")
    # Damp in the first tick after the watchdog limit passed: within one control period of it.
    detected = trip.time + rt._start_time
    assert detected - (stale_since + GO2.safety.state_timeout_ms / 1000) <= 1.5 * rt.dt
    assert is_damping(robot, GO2.damping_kd)
    rt.close()


def test_state_with_nan(bundle, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    rt, robot = running(bundle)
    robot.inject_fault("nan_state")
    tick = rt.ticks
    rt.spin(0.01)
    trip = trip_of(rt, caplog, "NaN/inf in q")
    assert trip.tick == tick + 1 and is_damping(robot, GO2.damping_kd)
    rt.close()


def test_policy_stalls(bundle, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    release = threading.Event()
    calls = {"n": 0, "stalled_at": None}

    def stalling(obs):
        calls["n"] += 1
        if calls["n"] > 30:  # the ONNX policy hangs after 30 steps
            calls["stalled_at"] = calls["stalled_at"] or time.monotonic()
            release.wait(5.0)
        return bundle.policy(obs)

    rt, robot = running(bundle, policy=stalling)
    rt.spin(0.6)
    release.set()
    trip = trip_of(rt, caplog, "policy stalled")
    detected = trip.time + rt._start_time  # the hung request was submitted just before `stalled_at`
    assert detected - (calls["stalled_at"] + GO2.safety.policy_timeout_ms / 1000) <= 1.5 * rt.dt
    assert is_damping(robot, GO2.damping_kd)
    rt.close()


def test_target_beyond_joint_limit(bundle, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    broken = {"on": False}

    def policy(obs):  # a policy that suddenly asks for +2.5 rad on every joint
        actions = bundle.policy(obs)
        return actions + 10.0 if broken["on"] else actions

    rt, robot = running(bundle, policy=policy)
    names = bundle.manifest.joints.names
    lo, hi = np.asarray(bundle.manifest.joints.pos_limits).T
    margin = GO2.safety.target_limit_margin
    sent = {}  # the runtime's tick number -> (targets, kp) written in that tick, policy order
    broken["on"] = True
    first = rt.ticks + 1

    def record(r: DeployRuntime) -> None:
        sent[r.ticks] = (robot._cmd.q[r.index].copy(), robot._cmd.kp[r.index].copy())

    rt.spin(0.2, on_tick=record)
    trip = trip_of(rt, caplog, "beyond its range")
    # The target check tripped (not the measured-joint check, whose message also says "beyond its range"), on a
    # target really beyond the range by more than the margin, and it says which joint.
    match = re.fullmatch(r"target (-?\d+\.\d{3}) rad for joint (\w+) is beyond its range "
                         r"\[(-?\d+\.\d{3}), (-?\d+\.\d{3})\] by more than (\S+) rad", trip.reason)
    assert match, trip.reason
    value, joint = float(match[1]), match[2]
    j = names.index(joint)
    assert (float(match[3]), float(match[4]), float(match[5])) == (round(lo[j], 3), round(hi[j], 3), margin)
    assert value > hi[j] + margin or value < lo[j] - margin
    assert trip.mode == "run" and first < trip.tick <= max(sent)
    assert is_damping(robot, GO2.damping_kd)
    # Every stiff command before the trip tick was clamped into the joint range; from the trip tick on: damping.
    before = [sent[t] for t in range(first, trip.tick)]
    assert len(before) == trip.tick - first and all(np.all(kp > 0) for _, kp in before)
    assert all(np.all((q >= lo - 1e-9) & (q <= hi + 1e-9)) for q, _ in before)
    # ... and moved at most max_target_rate / control_hz per tick toward the far target (rate limit, 0.04 rad).
    step = np.abs(np.diff([q for q, _ in before], axis=0)).max(axis=1)
    assert np.all(step <= GO2.safety.max_target_rate / GO2.control_hz + 1e-9) and step.max() > 0.02, step
    assert all(np.all(sent[t][1] == 0) for t in sent if t >= trip.tick)
    rt.close()


def test_estop(bundle, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    rt, robot = running(bundle)
    tick = rt.ticks
    rt.estop()
    rt.spin(0.01)
    trip = trip_of(rt, caplog, "e-stop")
    assert trip.tick == tick + 1 and is_damping(robot, GO2.damping_kd)
    assert rt.stand().startswith("stand ignored")  # latched until reset
    assert rt.reset() == "passive" and rt.mode == Mode.PASSIVE
    rt.close()


def test_tilt_trips_legged_robot(bundle, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    rt, robot = running(bundle)
    robot.data.qpos[3:7] = [np.cos(0.6), np.sin(0.6), 0, 0]  # roll 69 degrees
    mujoco.mj_forward(robot.model, robot.data)
    rt.spin(0.01)
    trip_of(rt, caplog, "body tilted")
    rt.close()


def test_bundle_with_wrong_checksum(bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle.folder, copy)
    data = bytearray((copy / "policy.onnx").read_bytes())
    data[-100] ^= 0xFF
    (copy / "policy.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(copy)


def test_bundle_whose_joints_are_not_on_the_robot(bundle):
    profile = load_profile("panda")
    robot = make_robot(profile, "sim")
    with pytest.raises(BundleError, match="legged policy cannot run on the arm robot panda"):
        DeployRuntime(bundle, profile, robot)
    renamed = fast_profile(joint_names=[n.replace("FR_", "XX_") for n in GO2.joint_names])
    other = SimRobot("go2", 0.002)
    other.joint_names = renamed.joint_names  # a robot whose driver names its joints differently
    with pytest.raises(BundleError, match=r"joints \['FR_hip_joint', 'FR_thigh_joint', 'FR_calf_joint'\]"):
        DeployRuntime(bundle, renamed, other)
    assert np.all(other._cmd.kp == 0) and np.all(other._cmd.kd == 0)  # it was never commanded


def test_joint_order_is_mapped_by_name(bundle):
    """The profile lists joints in Unitree motor order (FR first), the policy in model order (FL first)."""
    rt, robot = running(bundle)
    assert robot.joint_names[0] == "FR_hip_joint" and bundle.manifest.joints.names[0] == "FL_hip_joint"
    assert [robot.joint_names[i] for i in rt.index] == bundle.manifest.joints.names
    fl_calf = robot.joint_names.index("FL_calf_joint")
    assert abs(robot._cmd.q[fl_calf] - rt._target[2]) < 1e-12  # policy index 2 = FL_calf_joint
    assert abs(robot.read().q[fl_calf] - robot.data.qpos[robot.model.joint("FL_calf_joint").qposadr[0]]) < 1e-12
    rt.close()


def test_bad_command_and_control_rate_give_clear_errors(bundle):
    rt, _ = running(bundle)
    with pytest.raises(ConfigError, match="command must be 3 finite numbers"):
        rt.set_command([np.nan, 0, 0])
    rt.close()
    profile = fast_profile(control_hz=475.0)
    with pytest.raises(ConfigError, match="must be a multiple of the policy rate 50 Hz"):
        DeployRuntime(bundle, profile, make_robot(profile, "sim"))


def test_cartesian_impedance_tracks_and_has_the_set_stiffness():
    robot = SimRobot("panda", 0.002)
    kin = ArmKinematics("panda")
    q0 = robot.read().q
    ctrl = CartesianImpedance(kin, ImpedanceCfg(), q_nominal=q0)
    ctrl.hold_current(q0)
    start = ctrl.target_pos.copy()
    ctrl.set_target(start + [0.1, 0.05, -0.05])
    for _ in range(1500):
        s = robot.read()
        robot.write(ctrl.command(s.q, s.dq))
    kin.update(robot.read().q)
    assert np.linalg.norm(kin.ee_pose()[0] - ctrl.target_pos) < 0.005

    # A 10 N push at the end effector deflects it by about F / K along the push.
    site = kin.model.site(kin.site)
    body = robot.model.site(site.name).bodyid[0]
    deflections = {}
    for k in (300.0, 900.0):
        ctrl.set_stiffness([k, k, k, 30, 30, 30])
        for _ in range(1000):
            s = robot.read()
            point = robot.data.site_xpos[robot.model.site(site.name).id]
            force = np.array([0.0, 10.0, 0.0])
            robot.data.xfrc_applied[body] = np.concatenate([force, np.cross(point - robot.data.xipos[body], force)])
            robot.write(ctrl.command(s.q, s.dq))
        kin.update(robot.read().q)
        deflections[k] = kin.ee_pose()[0][1] - ctrl.target_pos[1]
    for k, d in deflections.items():
        assert d == pytest.approx(10.0 / k, rel=0.3), deflections
    with pytest.raises(ConfigError, match="6 non-negative numbers"):
        ctrl.set_stiffness([1, 2, 3])


@pytest.mark.parametrize("robot", ["panda", "so100"])
def test_end_effector_from_the_bundles_kinematic_chain_is_mujocos(robot):
    """The deploy runtime computes ee_pos with numpy from the chain export writes into deploy.yaml (no simulator
    on the robot computer): MuJoCo's site pose, over the joint ranges, to 1e-9."""
    import yaml

    from robolearn.deploy.bundle import KinematicLink
    from robolearn.deploy.kinematics import ChainKinematics
    from robolearn.export import kinematic_chain

    kin = ArmKinematics(robot)
    names = list(reversed(kin.joint_names))  # any order: joints are found by name
    kin = ArmKinematics(robot, names)
    chain = kinematic_chain(kin.model, kin.model.site(kin.site).name, names, "tcp")
    assert chain[-1].link == "tcp" and chain[-1].joint is None
    # through YAML, as deploy.yaml carries it
    chain = [from_dict(KinematicLink, d, where="chain") for d in yaml.safe_load(yaml.safe_dump([to_dict(c) for c in
                                                                                               chain]))]
    fk = ChainKinematics(chain, names)
    lo, hi = np.array([kin.model.joint(j).range for j in names]).T
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.uniform(lo, hi)
        kin.update(q)
        pos, rot = kin.ee_pose()
        got_pos, got_rot = fk.ee_pose(q)
        assert np.abs(got_pos - pos).max() < 1e-9 and np.abs(got_rot - rot).max() < 1e-9
        assert np.array_equal(fk.fk(q), got_pos)
    with pytest.raises(BundleError, match=r"carries no kinematic chain \(robot_model.chain\): export it again"):
        ChainKinematics.from_manifest(load_bundle("go2-flat").manifest)


def test_orientation_error_is_mujocos_rotation_vector():
    from robolearn.deploy.controllers import orientation_error

    rng = np.random.default_rng(1)

    def unit() -> np.ndarray:
        q = rng.normal(size=4)
        return q / np.linalg.norm(q)

    for k in range(200):
        a, b, quat, vel = np.zeros(9), np.zeros(9), np.zeros(4), np.zeros(3)
        mujoco.mju_quat2Mat(a, unit())
        mujoco.mju_quat2Mat(b, unit() if k % 4 else np.array([1.0, 0.0, 0.0, 0.0]))
        rot, target = a.reshape(3, 3), (b.reshape(3, 3) @ a.reshape(3, 3) if k % 4 == 0 else b.reshape(3, 3))
        mujoco.mju_mat2Quat(quat, (target @ rot.T).ravel())
        mujoco.mju_quat2Vel(vel, quat, 1.0)
        assert np.abs(orientation_error(rot, target) - vel).max() < 1e-9
