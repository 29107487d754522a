"""DeployRuntime's fault paths at real time on the Go2 twin (SimRobot, MuJoCo) with the shipped go2-flat bundle.

Faults are injected where they happen on hardware: the policy (raises, wrong shape, hangs), the transport (a
write that fails, a read that raises), the robot's state (stale, NaN, an IMU glitch, the e-stop flag it reports).
`FaultyRobot` is the real twin with those switches; nothing else is replaced. Every fault must end in Damp
(kp = 0, kd from the profile) with one trip that names it. Timing asserts are orderings and bounds a descheduled
tick cannot break (a slow machine only makes ticks later, never more frequent).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from robolearn.config import from_dict, merge, to_dict
from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.interface import JointCommand, RobotState
from robolearn.deploy.profile import HardwareProfile, load_profile
from robolearn.deploy.runtime import DeployRuntime, Mode
from robolearn.twin.sim_robot import SimRobot

GO2 = load_profile("go2")


@pytest.fixture(scope="module")
def bundle():
    return load_bundle("go2-flat")


def fast_profile(**changes) -> HardwareProfile:
    """The go2 profile with a 0.1 s stand ramp from a standing start, and the given overrides. The policy watchdog
    waits 250 ms, not 60: on a loaded 2-core machine the policy thread can wait that long for a core (the
    watchdog's own timing is tested in test_deploy.py; the hung-policy test here sets its limit)."""
    data = merge(to_dict(GO2), {"stand": {"duration_s": 0.1}, "sim": {"start": "standing"},
                                "safety": {"policy_timeout_ms": 250}})
    return from_dict(HardwareProfile, merge(data, changes), where="test profile")


class FaultyRobot(SimRobot):
    """The Go2 twin with transport and sensor faults to switch on: a write or a read that raises, the robot's own
    e-stop flag, an IMU gyro glitch."""

    def __init__(self, profile: HardwareProfile) -> None:
        super().__init__(profile.model, 1.0 / profile.control_hz, joint_names=profile.joint_names,
                         start=profile.sim.start, start_pose=profile.sim.start_pose)
        self.write_error: Exception | None = None
        self.read_error: Exception | None = None
        self.estop_pressed = False
        self.gyro_glitch: float | None = None

    def read(self) -> RobotState:
        if self.read_error is not None:
            raise self.read_error
        state = super().read()
        state.estop = self.estop_pressed
        if self.gyro_glitch is not None:
            state.gyro = np.full(3, self.gyro_glitch)
        return state

    def write(self, cmd: JointCommand) -> None:
        if self.write_error is not None:
            raise self.write_error
        super().write(cmd)


def start(bundle, policy=None, profile=None, *, run=True) -> tuple[DeployRuntime, FaultyRobot]:
    """Passive -> Stand -> (Run), at real time."""
    profile = profile or fast_profile()
    robot = FaultyRobot(profile)
    rt = DeployRuntime(bundle, profile, robot, policy=policy)
    rt.spin(0.02)
    assert rt.stand() == "stand"
    rt.spin(profile.stand.duration_s + 0.05)
    if run:
        assert rt.run() == "run"
        rt.spin(0.2)
        assert rt.mode == Mode.RUN, rt.trips
    return rt, robot


def is_damping(robot: SimRobot, kd: float = GO2.damping_kd) -> bool:
    cmd = robot._cmd
    return bool(np.all(cmd.kp == 0) and np.allclose(cmd.kd, kd) and np.all(cmd.tau == 0) and np.all(cmd.dq == 0))


def is_zero_torque(robot: SimRobot) -> bool:
    cmd = robot._cmd
    return bool(np.all(cmd.kp == 0) and np.all(cmd.kd == 0) and np.all(cmd.tau == 0))


def one_trip(rt: DeployRuntime, caplog, reason: str):
    """Damp, exactly one trip, with exactly this reason, logged as a safety trip."""
    assert rt.mode == Mode.DAMP, rt.mode
    assert [t.reason for t in rt.trips] == [reason]
    assert any(r.message.startswith("safety trip") and reason in r.message for r in caplog.records)
    return rt.trips[0]


# -- the policy --------------------------------------------------------------------------------------------------
def test_policy_that_raises_damps_and_the_trip_names_the_error(bundle, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    broken = threading.Event()

    def policy(obs):
        if broken.is_set():
            raise RuntimeError("CUDA error: device lost")
        return bundle.policy(obs)

    rt, robot = start(bundle, policy)
    broken.set()
    rt.spin(0.1)
    one_trip(rt, caplog, "policy raised RuntimeError: CUDA error: device lost")
    assert is_damping(robot)
    rt.close()


@pytest.mark.parametrize("shape", [(11,), (1, 12), ()])
def test_policy_with_the_wrong_action_shape_damps(bundle, caplog, shape):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    broken = threading.Event()

    def policy(obs):
        actions = bundle.policy(obs)
        return np.resize(actions, shape) if broken.is_set() else actions

    rt, robot = start(bundle, policy)
    broken.set()
    rt.spin(0.1)
    one_trip(rt, caplog, f"policy returned shape {shape}")
    assert is_damping(robot)
    rt.close()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the injected glitch
def test_non_finite_observation_damps_and_never_reaches_the_policy(bundle, caplog):
    """An IMU glitch of 1e40 rad/s is a finite float64 (the state check passes it) but overflows the float32
    observation to inf: the observation check trips before the policy sees it."""
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    seen = []

    def policy(obs):
        seen.append(np.asarray(obs).copy())
        return bundle.policy(obs)

    rt, robot = start(bundle, policy)
    n_seen, tick = len(seen), rt.ticks
    robot.gyro_glitch = 1e40
    rt.spin(0.1)
    trip = one_trip(rt, caplog, "policy observation has NaN/inf at index 0")  # base_ang_vel comes first
    assert tick < trip.tick <= tick + rt.policy_every  # at the first observation built after the glitch
    assert is_damping(robot)
    assert len(seen) >= n_seen and all(np.all(np.isfinite(o)) for o in seen)
    rt.close()


def test_a_policy_still_hung_from_the_previous_run_is_caught_by_the_watchdog(bundle, caplog):
    """Run -> the policy hangs -> stall trip -> reset, stand, run again while that request is still hung: the
    new run cannot submit (the worker is busy) and must trip on the watchdog, not run on without a policy."""
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    release, hang = threading.Event(), threading.Event()

    def policy(obs):
        if hang.is_set():
            release.wait(10.0)
        return bundle.policy(obs)

    rt, robot = start(bundle, policy, fast_profile(safety={"policy_timeout_ms": 100}))
    timeout = rt.profile.safety.policy_timeout_ms / 1000.0
    hang.set()
    rt.spin(0.3)
    assert rt.mode == Mode.DAMP and rt.trips[-1].reason.startswith("policy stalled"), rt.trips
    hang.clear()  # later requests would answer; the one in flight stays hung
    assert rt.reset() == "passive" and rt.stand() == "stand"
    rt.spin(rt.profile.stand.duration_s + 0.05)
    assert rt.run() == "run"
    ran, ran_at = rt.ticks, rt.clock() - rt._start_time
    rt.spin(0.4)
    assert rt.mode == Mode.DAMP and len(rt.trips) == 2, rt.trips
    second = rt.trips[1]
    assert second.reason.startswith("policy stalled") and second.tick > ran
    # The watchdog counts from the run's first policy step: the trip comes a timeout later, not never.
    assert second.time - ran_at >= timeout
    assert is_damping(robot)
    release.set()
    rt.close()


# -- the transport -----------------------------------------------------------------------------------------------
def test_failing_write_trips_once_and_damps_when_the_link_returns(bundle, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    rt, robot = start(bundle)
    robot.write_error = OSError("link down")
    tick = rt.ticks
    rt.spin(0.05)  # ~25 failing writes
    trip = one_trip(rt, caplog, "cannot write to the robot: OSError: link down")
    assert trip.tick == tick + 1 and trip.mode == "run"
    assert not is_damping(robot)  # nothing got through
    robot.write_error = None
    rt.spin(0.01)
    assert rt.mode == Mode.DAMP and len(rt.trips) == 1 and is_damping(robot)  # latched: the first write is Damp
    rt.close()


def test_failing_read_trips_once_and_keeps_damping(bundle, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    rt, robot = start(bundle)
    robot.read_error = ConnectionError("socket closed")
    tick = rt.ticks
    rt.spin(0.05)
    trip = one_trip(rt, caplog, "runtime error: ConnectionError: socket closed")
    assert trip.tick == tick + 1 and is_damping(robot)
    robot.read_error = None
    rt.close()


# -- the e-stop --------------------------------------------------------------------------------------------------
def test_robot_estop_flag_damps_and_reset_is_refused_while_pressed(bundle, caplog):
    caplog.set_level(logging.ERROR, "robolearn.deploy")
    rt, robot = start(bundle)
    robot.estop_pressed = True
    tick = rt.ticks
    rt.spin(0.02)
    trip = one_trip(rt, caplog, "e-stop")
    assert trip.tick == tick + 1 and is_damping(robot)
    assert rt.reset() == "reset refused: the robot's e-stop is still pressed" and rt.mode == Mode.DAMP
    assert rt.stand().startswith("stand ignored") and rt.run().startswith("run ignored")
    rt.spin(0.02)
    assert rt.mode == Mode.DAMP and is_damping(robot) and len(rt.trips) == 1
    robot.estop_pressed = False
    rt.spin(0.01)  # the runtime sees the release in the next reading
    assert rt.reset() == "passive"
    rt.spin(0.01)
    assert rt.mode == Mode.PASSIVE and is_zero_torque(robot)
    # Pressed while passive: Damp at once, so the robot cannot be stood up while the e-stop is down.
    robot.estop_pressed = True
    rt.spin(0.01)
    assert rt.mode == Mode.DAMP and len(rt.trips) == 2 and rt.trips[1].reason == "e-stop" and is_damping(robot)
    rt.close()


# -- stand and run requests ---------------------------------------------------------------------------------------
def test_stand_is_refused_on_a_stale_or_nan_state(bundle):
    profile = fast_profile()
    robot = FaultyRobot(profile)
    rt = DeployRuntime(bundle, profile, robot)
    assert rt.stand() == "stand ignored: no robot state yet"
    rt.spin(0.02)
    robot.inject_fault("stale_state")
    rt.spin(0.05)  # older than the 20 ms watchdog
    reply = rt.stand()
    assert reply.startswith("stand refused: robot state is stale: last one ") and reply.endswith("(limit 20 ms)")
    assert rt.mode == Mode.PASSIVE and is_zero_torque(robot) and rt.trips == []
    robot.inject_fault("nan_state")  # the robot reports NaN for its first motor, FR_hip_joint
    rt.spin(0.01)
    assert rt.stand() == "stand refused: robot state has NaN/inf in q (FR_hip_joint)"
    assert rt.mode == Mode.PASSIVE and is_zero_torque(robot) and rt.trips == []
    robot.inject_fault("none")
    rt.spin(0.01)
    assert rt.stand() == "stand" and rt.mode == Mode.STAND
    rt.close()


def test_run_before_the_stand_ramp_ends_is_refused_not_deferred(bundle):
    calls = []

    def policy(obs):
        calls.append(time.monotonic())
        return bundle.policy(obs)

    profile = fast_profile(stand={"duration_s": 1.0})
    robot = FaultyRobot(profile)
    rt = DeployRuntime(bundle, profile, robot, policy=policy)
    rt.spin(0.02)
    assert rt.run() == "run ignored: runtime is in passive; run starts once the stand ramp is complete"
    assert rt.stand() == "stand"
    rt.spin(0.05)
    assert 0.0 < rt.stand_progress() < 1.0
    assert rt.run() == "run ignored: runtime is in stand; run starts once the stand ramp is complete"
    while rt.stand_progress() < 1.0:
        rt.spin(0.05)
    rt.spin(0.05)
    assert rt.mode == Mode.STAND and calls == []  # the refused request was not queued: no policy step ever ran
    assert rt.run() == "run"
    rt.spin(0.1)
    assert rt.mode == Mode.RUN and len(calls) >= 1
    rt.close()


# -- the control loop ---------------------------------------------------------------------------------------------
def test_no_burst_of_catch_up_ticks_after_a_stall(bundle):
    """One tick stalls 0.2 s (100 periods). The loop then goes on at its rate from where it is: it does not run
    the 100 missed ticks back to back. Ticks start no earlier than their deadlines, and deadlines are a period
    apart, so any window of W seconds holds at most W / dt + a few ticks; a burst would put ~100 into it."""
    profile = fast_profile()
    rt = DeployRuntime(bundle, profile, FaultyRobot(profile))
    dt = rt.dt
    stamps: list[float] = []
    stall = {"end": None}

    def on_tick(r: DeployRuntime) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) == 50:
            time.sleep(0.2)
            stall["end"] = time.perf_counter()

    rt.spin(0.5, on_tick=on_tick)
    rt.close()
    after = np.array([t for t in stamps if t > stall["end"]])
    assert len(after) >= 20, len(after)  # the loop went on after the stall
    window = 20 * dt
    in_first_window = int(np.sum(after <= stall["end"] + window))
    assert in_first_window <= 20 + 3, f"{in_first_window} ticks in the {window * 1e3:.0f} ms after the stall"
    for t0 in after:  # every window after the stall, not only the first
        assert int(np.sum((after >= t0) & (after < t0 + window))) <= 20 + 3
    assert (after[-1] - after[0]) / (len(after) - 1) >= 0.9 * dt  # on average not faster than the rate
    assert rt.stats.overruns >= 1


def test_overruns_are_split_by_whether_inference_was_in_flight(bundle):
    """A policy that takes 30 ms (1.5 policy periods) is in flight for most ticks; a tick stalled while it is in
    flight counts as an overrun during inference, one stalled while it is not counts as an idle overrun. The
    benchmark's busy/idle overrun rates (benchmarks/diffusion_twin.py) rest on this split."""
    zero = np.zeros(len(bundle.manifest.joints.names))

    def slow(obs: np.ndarray) -> np.ndarray:
        time.sleep(0.03)
        return zero

    rt, _ = start(bundle, policy=slow)
    rt.stats.reset()
    assert rt.stats.summary()["ticks"] == 0
    seen = {"busy": 0, "idle": 0}
    was_busy = [True]

    def on_tick(r: DeployRuntime) -> None:
        # requests are submitted only inside a tick: idle now and at the end of the previous tick means idle
        # for the whole of this tick
        busy = r.worker.busy
        kind = "busy" if busy else None if was_busy[0] else "idle"
        was_busy[0] = busy
        if kind is not None and seen[kind] < 2 and r.ticks % 7 == 0:  # stall two ticks of each kind, 3 periods
            seen[kind] += 1
            time.sleep(3 * r.dt)

    rt.spin(0.4, on_tick=on_tick)
    rt.close()
    s = rt.stats
    assert seen == {"busy": 2, "idle": 2}
    assert 0.5 * len(s.periods) < s.busy_ticks < len(s.periods)  # in flight 30 of every 20 ms, minus the gaps
    assert s.overruns_busy >= 2 and s.overruns - s.overruns_busy >= 2
    assert s.overruns_busy <= s.overruns


def test_targets_are_interpolated_linearly_between_policy_steps(bundle):
    """The policy (50 Hz) alternates between two actions; the joint targets sent at 500 Hz move from the current
    target to the new policy target in policy_every (10) equal steps, then hold it until the next policy step:
    linear, as the bundle declares (it was trained that way)."""
    m = bundle.manifest
    assert m.interpolation == "linear"
    low, high = 0.0, 0.1  # actions; targets default and default + 0.025 rad (action_scale 0.25)
    calls = []

    def alternating(obs):
        calls.append(None)
        return np.full(m.policy.action_dim, high if len(calls) % 2 else low)

    rt, robot = start(bundle, alternating, run=False)
    default = np.asarray(m.joints.default_pos)
    kp = np.asarray(m.joints.kp)
    assert np.allclose(rt._target, default, atol=1e-12)  # the stand ramp ended on the default pose
    sent = []
    assert rt.run() == "run"
    rt.spin(0.4, on_tick=lambda r: sent.append((r.mode, robot._cmd.q[r.index].copy(), robot._cmd.kp[r.index].copy())))
    assert all(mode == Mode.RUN for mode, _, _ in sent), rt.trips
    assert all(np.array_equal(k, kp) for _, _, k in sent)
    targets = np.array([q for _, q, _ in sent])
    jump = m.action_scale * (high - low)  # 0.025 rad: well under the rate limit (0.04 rad per tick)
    assert jump < GO2.safety.max_target_rate / GO2.control_hz
    rel = targets - default
    assert np.all(rel >= -1e-12) and np.all(rel <= jump + 1e-12)  # between the two policy targets, never beyond
    assert np.allclose(rel, rel[:, :1], atol=1e-12)  # every joint moves together (same action on all)
    path = rel[:, 0]
    steps = np.abs(np.diff(path))
    assert steps.max() <= jump / rt.policy_every + 1e-12, steps.max()  # no jump: at most 1/10 of the way per tick
    # The targets reach each policy target and come back: full interpolations both ways, with holds between.
    top = np.flatnonzero(np.abs(path - jump) < 1e-12)
    assert top.size and np.any(np.abs(path[top[0]:]) < 1e-12), path
    # A rise that runs to the end (the next policy step came no sooner) takes exactly policy_every equal steps.
    n = rt.policy_every
    starts = [i for i in range(len(path) - n) if abs(path[i]) < 1e-12 and path[i + 1] > 1e-12]
    full = [i for i in starts if abs(path[i + n] - jump) < 1e-12]
    assert full, path
    for i in full:
        assert np.allclose(np.diff(path[i:i + n + 1]), jump / n, rtol=0, atol=1e-12), path[i:i + n + 1]
    assert len(calls) >= 10
    rt.close()
