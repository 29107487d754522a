"""The deploy runtime: a state machine over a robot, a low-level joint controller, the policy and the safety layer.

    PASSIVE (zero torque) --stand()--> STAND (ramp from the measured pose to the default pose)
        --run()--> RUN (policy at its rate, joint PD at the robot's rate; between policy steps the target is held or
        interpolated, as the bundle's `control.between_steps` says: version 1 bundles interpolate)
    any --stop() / e-stop / safety trip--> DAMP (kp = 0, kd from the profile), latched until reset()

On a position-only interface (`robot.position_only`: ros2_control forward/trajectory controllers, servos) kp = 0
cannot be sent: Passive and Damp are a hold of the measured position, and Damp's hold stops after the profile's
`damp_hold_s`, after which the runtime publishes nothing until reset(). Every mode change is in `timeline`.

One control tick (`tick()`) reads the robot, runs the safety checks, computes the joint command and writes it.
`spin()` runs ticks at the profile's control rate in real time (sleep, then spin for the last half
millisecond) and records loop timing. The policy runs in its own thread, so a stalled policy is seen by the
control loop (the watchdog) instead of blocking it. Every trip is logged with its reason and the robot damps
in the same tick.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn.deploy.bundle import Bundle
from robolearn.deploy.interface import JointCommand, RobotInterface, RobotState
from robolearn.deploy.navigation import NavigationSources, PathFollower
from robolearn.deploy.observations import Measurement, ObservationBuilder
from robolearn.deploy.profile import HardwareProfile, ThreadsCfg
from robolearn.deploy.safety import SafetyLayer
from robolearn.deploy.safety_filter import SafetyFilter
from robolearn.errors import BundleError, ConfigError

__all__ = ["Mode", "Trip", "Transition", "LoopStats", "PolicyWorker", "DeployRuntime", "IMU_TERMS"]

log = logging.getLogger("robolearn.deploy")
POLICY_NICENESS = 10  # the policy thread's niceness (lower scheduling priority than the control loop)
SPIN_S = 0.0005  # the last part of each period is busy-waited: time.sleep overshoots by ~0.1 ms


class Mode(enum.StrEnum):
    PASSIVE = "passive"
    STAND = "stand"
    RUN = "run"
    DAMP = "damp"


@dataclass
class Trip:
    time: float  # runtime clock, s
    tick: int
    mode: str
    reason: str


@dataclass
class Transition:
    """One change of mode (the session's timeline): when, in which tick, from and to, and why."""

    time: float  # s since the runtime was made
    tick: int
    from_mode: str
    to_mode: str
    reason: str


IMU_TERMS = ("base_ang_vel", "projected_gravity")  # observation terms measured by an IMU


@dataclass
class LoopStats:
    """Control-loop timing: periods (tick start to tick start) and tick compute times; policy latencies."""

    target_period: float
    periods: deque = field(default_factory=lambda: deque(maxlen=100_000))
    compute: deque = field(default_factory=lambda: deque(maxlen=100_000))
    policy_latency: deque = field(default_factory=lambda: deque(maxlen=100_000))
    high_latency: deque = field(default_factory=lambda: deque(maxlen=100_000))  # a high level's graph, s
    overruns: int = 0
    # ticks during which a policy request was in flight (inference running beside the control loop), and the
    # overruns among them: inference causes overruns when their rate is above the rate of the other ticks
    busy_ticks: int = 0
    overruns_busy: int = 0

    def reset(self) -> None:
        """Forget everything measured so far (a benchmark measuring one phase of a run)."""
        for name in ("periods", "compute", "policy_latency", "high_latency"):
            getattr(self, name).clear()
        self.overruns = self.busy_ticks = self.overruns_busy = 0

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"ticks": float(len(self.periods)), "overruns": float(self.overruns),
                                 "busy_ticks": float(self.busy_ticks), "overruns_busy": float(self.overruns_busy)}
        if self.periods:
            p = np.asarray(self.periods)
            err = np.abs(p - self.target_period) * 1000.0
            out.update(rate_hz=1.0 / p.mean(), period_err_p50_ms=float(np.percentile(err, 50)),
                       period_err_p99_ms=float(np.percentile(err, 99)), period_err_max_ms=float(err.max()),
                       compute_p99_ms=float(np.percentile(np.asarray(self.compute) * 1000.0, 99)),
                       compute_max_ms=float(np.max(self.compute) * 1000.0))
        if self.policy_latency:
            lat = np.asarray(self.policy_latency) * 1000.0
            out.update(policy_p50_ms=float(np.percentile(lat, 50)), policy_p99_ms=float(np.percentile(lat, 99)),
                       policy_max_ms=float(lat.max()))
        if self.high_latency:
            lat = np.asarray(self.high_latency) * 1000.0
            out.update(high_level_p99_ms=float(np.percentile(lat, 99)), high_level_max_ms=float(lat.max()))
        return out


class PolicyWorker:
    """Runs `policy(obs) -> actions` in a daemon thread; one request in flight at a time."""

    def __init__(self, policy: Callable[[np.ndarray], np.ndarray], *, cpus: set[int] | None = None) -> None:
        self.policy = policy
        self.cpus = cpus  # pin the thread to these CPUs
        self._request: Any = None  # an observation (an image policy's: (observation, camera frames))
        self._result: tuple[np.ndarray, float, str | None] | None = None
        self._busy = False
        self._drop = False  # the request in flight was discarded: forget its result
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="robolearn-policy", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A request is being computed (read without the lock: a timing statistic, not a decision)."""
        return self._busy

    def submit(self, obs: Any) -> bool:
        """Queue an observation; False if the previous one is still being computed."""
        with self._cv:
            if self._busy:
                return False
            self._request, self._busy = obs, True
            self._cv.notify()
            return True

    def poll(self) -> tuple[np.ndarray, float, str | None] | None:
        """(actions, latency s, error) of a finished request, once; error: what the policy raised, else None."""
        with self._cv:
            result, self._result = self._result, None
            return result

    def discard(self) -> None:
        """Forget the finished result and the one in flight: a new run never acts on an older observation."""
        with self._cv:
            self._result = None
            self._drop = self._busy

    def _loop(self) -> None:
        # The control loop outranks the policy: on a busy CPU the scheduler runs the control thread first (a late
        # action is held by the control loop; a late control tick is an overrun). Linux: niceness is per thread.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), POLICY_NICENESS)
        if self.cpus:
            _set_affinity(self.cpus)
        while True:
            with self._cv:
                while self._request is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                obs, self._request = self._request, None
            start = time.perf_counter()
            error = None
            try:
                actions = np.asarray(self.policy(obs), dtype=np.float64)
            except Exception as exc:  # a crashing policy gives no action: the runtime damps, naming the error
                log.error("policy raised %s: %s", type(exc).__name__, exc)
                actions, error = np.full(1, np.nan), f"{type(exc).__name__}: {exc}"
            with self._cv:
                if self._drop:
                    self._drop = False
                else:
                    self._result = (actions, time.perf_counter() - start, error)
                self._busy = False

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread, waiting up to `timeout_s` for a request in flight: a daemon thread left inside
        onnxruntime when the interpreter exits can abort the process ('terminate called without an active exception',
        seen at the end of one 20-episode twin run)."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the policy thread is still computing %.1f s after close", timeout_s)


def _set_affinity(cpus: set[int]) -> None:
    """Pin the calling thread to `cpus` (Linux); a failure is logged, never raised (timing, not safety)."""
    try:
        os.sched_setaffinity(threading.get_native_id(), cpus)
    except (OSError, AttributeError, ValueError) as exc:
        log.warning("cannot pin thread %s to CPUs %s: %s", threading.current_thread().name, sorted(cpus), exc)


def thread_cpus(cfg: ThreadsCfg) -> tuple[set[int] | None, set[int] | None]:
    """(control CPUs, policy CPUs) of a profile's `threads` section; (None, None) when not pinning (or fewer than
    two CPUs are allowed)."""
    if not cfg.pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    control = set(cfg.control_cpus) if cfg.control_cpus is not None else set(allowed[:-1])
    policy = set(cfg.policy_cpus) if cfg.policy_cpus is not None else set(allowed[-1:])
    bad = sorted((control | policy) - set(allowed))
    if bad:
        raise ConfigError(f"threads: CPUs {bad} are not available to this process (allowed: {allowed})")
    if len(allowed) < 2 or not control or not policy:
        log.warning("threads.pin: needs two CPUs or more (allowed: %s); not pinning", allowed)
        return None, None
    return control, policy


class DeployRuntime:
    """Runs a bundle on a robot. Joint arrays inside are in policy order; the robot sees its own order."""

    def __init__(self, bundle: Bundle, profile: HardwareProfile, robot: RobotInterface, *,
                 policy: Callable[[np.ndarray], np.ndarray] | None = None, kinematics=None,
                 objects: Callable[[], tuple[np.ndarray, float] | None] | None = None,
                 cameras: dict[str, Callable[[], tuple[np.ndarray, float]]] | None = None,
                 navigation: NavigationSources | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        m = bundle.manifest
        self.check_fit(bundle, profile, robot.joint_names)
        ratio = profile.control_hz / m.policy_hz
        if abs(ratio - round(ratio)) > 1e-6 or ratio < 1:
            raise ConfigError(f"{profile.source}: control_hz {profile.control_hz:g} must be a multiple of the "
                              f"policy rate {m.policy_hz:g} Hz")
        self.bundle, self.profile, self.robot, self.clock = bundle, profile, robot, clock
        self.policy_every = int(round(ratio))
        self.hold_targets = m.interpolation == "hold"  # between two actions the target is held (else linear)
        self.dt = 1.0 / profile.control_hz
        self.index = np.array([robot.joint_names.index(j) for j in m.joints.names])  # policy -> robot order
        self.n_robot = len(robot.joint_names)
        self.default = np.asarray(m.joints.default_pos, dtype=float)
        self.kp = np.asarray(m.joints.kp, dtype=float)
        self.kd = np.asarray(m.joints.kd, dtype=float)
        self.stand_kp = np.full_like(self.kp, profile.stand.kp) if profile.stand.kp is not None else self.kp
        self.stand_kd = np.full_like(self.kd, profile.stand.kd) if profile.stand.kd is not None else self.kd
        self.safety = SafetyLayer(profile.safety, joint_names=m.joints.names,
                                  pos_limits=np.asarray(m.joints.pos_limits),
                                  vel_limits=np.asarray(m.joints.vel_limits),
                                  torque_limits=np.asarray(m.joints.torque_limits), control_dt=self.dt,
                                  legged=m.kind == "legged")
        self.observations = ObservationBuilder(m)
        if self.observations.needs_kinematics and kinematics is None:  # the policy observes the end effector
            from robolearn.deploy.kinematics import ChainKinematics

            kinematics = ChainKinematics.from_manifest(m)  # numpy, from the bundle's robot_model.chain
        self.kinematics = kinematics
        # A policy that observes an object (object_pose) reads it from `objects() -> (pose [7], stamp)`: motion
        # capture, fiducials or a pose estimator on a robot, the simulated object on the twin.
        if self.observations.needs_objects and objects is None:
            raise BundleError(f"{bundle.folder}: the policy observes object_pose, but no object pose source was given "
                              f"(on the twin: robolearn.twin.tabletop; on a robot: a tracked pose topic)")
        self.objects = objects
        # An image policy's cameras: name -> `() -> (RGB frame [H, W, 3] uint8, capture stamp)` (an OpenCV camera on a
        # robot); the frames travel to the policy thread, which resizes and encodes them.
        needed = m.camera_names
        missing = [name for name in needed if name not in (cameras or {})]
        if missing:
            raise BundleError(f"{bundle.folder}: the policy sees camera(s) {missing}, but no source was given for "
                              f"them (robolearn deploy --camera {missing[0]}=opencv:<index, device or file>)")
        self.cameras = [(name, cameras[name]) for name in needed]
        # A high level (a graph of role high_level) sets the low level's command every `high_every` policy steps.
        self.high = m.graph("high_level")
        if self.high is not None:
            if self.high.name not in bundle.graphs:
                raise BundleError(f"{bundle.folder}: high-level graph {self.high.name!r} of the bundle is not loaded")
            self._high_graph = bundle.graphs[self.high.name]
            self._high_obs = ObservationBuilder(m, self.high)
            self.high_every = int(round(m.policy_hz / self.high.rate_hz))
            self._command_low = np.asarray(self.high.command.low, dtype=float)
            self._command_high = np.asarray(self.high.command.high, dtype=float)
        self.decisions = 0  # high-level steps taken
        # A waypoint follower reads a path, the base pose and (for its scan) an occupancy grid (deploy.navigation).
        self.navigation, self.follower = navigation, None
        if m.navigation is not None:
            observed = m.observation + (self.high.observation if self.high is not None else [])
            scans = any(t.name == "occupancy_scan" for t in observed)
            clearance = any(t.name == "clearance_scan" for t in observed)
            if navigation is None or (scans and navigation.grid is None) or (
                    clearance and navigation.clearance is None):
                needs = ["a base pose source", "a path source"] + [
                    what for what, used in (("an occupancy grid (its scan)", scans),
                                            ("a clearance grid (its clearance scan)", clearance)) if used]
                raise BundleError(f"{bundle.folder}: the policy follows a path: it needs {', '.join(needs[:-1])} and "
                                  f"{needs[-1]} (robolearn.deploy.navigation.NavigationSources)")
            self.follower = PathFollower(m.navigation)
            self._scans, self._clearance_scans = scans, clearance
        self.ee = m.action.ee if m.action.type in ("ee_delta", "ee_target") else None  # end-effector actions: IK here
        if self.ee is not None:
            names = m.joints.names
            self._grip_index = np.array([names.index(j) for j in self.ee.gripper_joints], dtype=int)
            self._ws = (np.asarray(self.ee.workspace_low, dtype=float), np.asarray(self.ee.workspace_high, dtype=float))
            from robolearn.deploy.kinematics import ChainKinematics, quat_to_mat

            self._ee_rot = quat_to_mat(self.ee.orientation)
            # the IK runs over the bundle's chain (a given kinematics object may only do forward kinematics)
            self._ik = kinematics if hasattr(kinematics, "ik") else ChainKinematics.from_manifest(m)
            self._joint_low, self._joint_high = np.asarray(m.joints.pos_limits, dtype=float).T
        self._ee_target = np.zeros(3)
        self._control_cpus, policy_cpus = thread_cpus(profile.threads)
        self.worker = PolicyWorker(policy or bundle.policy, cpus=policy_cpus)
        self.filter: SafetyFilter | None = None  # the learned safety filter, with a safety_critic graph
        self._critic_missing: str | None = None
        critic = m.graph("safety_critic")
        if critic is not None and profile.safety.filter.enabled:
            if self.ee is not None:
                raise BundleError(f"{bundle.folder}: the safety filter scores joint-offset actions; this policy's "
                                  f"actions are end-effector commands (action.type {m.action.type})")
            if critic.name in bundle.graphs:
                self.filter = SafetyFilter(bundle.graphs[critic.name], profile.safety.filter, frame_dim=m.frame_dim,
                                           action_dim=m.policy.action_dim)
            else:  # declared, but not loaded: running without it is not what the bundle asks for
                self._critic_missing = f"safety critic graph {critic.name!r} of the bundle is not loaded"
        self.stats = LoopStats(target_period=self.dt)
        self.mode = Mode.PASSIVE
        self.trips: list[Trip] = []
        self.timeline: list[Transition] = []
        # Position-only interfaces (ros2_control forward controllers, servos) turn kp = 0 into a hold of the measured
        # position: Damp is then a hold, bounded by the profile's damp_hold_s, after which nothing is published.
        self.position_only = bool(getattr(robot, "position_only", False))
        self.damp_since: float | None = None  # runtime clock when Damp began
        self.hold_ended: float | None = None  # runtime clock when a position-only hold stopped publishing
        imu_terms = [t.name for t in m.observation if t.name in IMU_TERMS]
        self.imu_needs = imu_terms + (["the tilt check"] if m.kind == "legged" else [])
        self.ticks = 0
        self.command = np.zeros(3)
        self._command_set = False
        self.last_state: RobotState | None = None
        self._estop = False
        self._lock = threading.Lock()
        self._start_time = clock()
        self._target = self.default.copy()  # last commanded joint targets (policy order)
        self._reset_run()

    @staticmethod
    def check_fit(bundle: Bundle, profile: HardwareProfile, joint_names: list[str]) -> None:
        """A BundleError unless the bundle's policy can drive this robot: the same kind, all its joints present."""
        m = bundle.manifest
        if m.kind != profile.kind:
            raise BundleError(f"{bundle.folder}: this {m.kind} policy cannot run on the {profile.kind} robot "
                              f"{profile.name}")
        missing = [j for j in m.joints.names if j not in joint_names]
        if missing:
            raise BundleError(f"{bundle.folder}: joints {missing} of the policy are not on robot {profile.name} "
                              f"(its joints: {', '.join(joint_names)})")

    # -- requests (any thread: CLI, ROS services, DDS) -----------------------------------------------------
    def set_command(self, command: np.ndarray | list[float]) -> None:
        """Velocity command (vx, vy, wz) for legged policies (default 0: stand), target position for arm
        policies (default: the end-effector position when Run starts, i.e. hold)."""
        command = np.asarray(command, dtype=float)
        if command.shape != (3,) or not np.all(np.isfinite(command)):
            raise ConfigError(f"command must be 3 finite numbers, got {command.tolist()}")
        self.command = command
        self._command_set = True

    def stand(self) -> str:
        with self._lock:
            if self.mode != Mode.PASSIVE:
                return f"stand ignored: runtime is in {self.mode}, stand starts from passive"
            state = self.last_state
            if state is None:
                return "stand ignored: no robot state yet"
            reason = self.safety.check_state(state.q[self.index], state.dq[self.index], state.quat, state.gyro,
                                             self.clock() - state.stamp, active=False)
            if reason is not None:
                return f"stand refused: {reason}"
            if self.imu_needs and (state.quat is None or state.gyro is None):
                return (f"stand refused: the robot state has no IMU orientation/angular velocity, needed by "
                        f"{', '.join(self.imu_needs)}; set the profile's IMU topic (dds.imu_topic, ros2.imu_topic)")
            self._stand_from = self.last_state.q[self.index].copy()
            self._stand_t0 = self.clock()
            self._target = self._stand_from.copy()
            self._enter(Mode.STAND, "stand requested")
        log.info("stand: ramping to the default pose over %.1f s", self.profile.stand.duration_s)
        return "stand"

    def stand_progress(self) -> float:
        if self.mode != Mode.STAND:
            return 1.0 if self.mode == Mode.RUN else 0.0
        return min(1.0, (self.clock() - self._stand_t0) / max(self.profile.stand.duration_s, 1e-9))

    def run(self) -> str:
        with self._lock:
            if self.mode != Mode.STAND or self.stand_progress() < 1.0:
                return f"run ignored: runtime is in {self.mode}; run starts once the stand ramp is complete"
            self._reset_run()
            if self.kinematics is not None:
                ee_pos = self.kinematics.fk(self.last_state.q[self.index])
                self._ee_target = ee_pos  # end-effector actions move the commanded position from here
                if not self._command_set:  # an arm holds where it is until told
                    self.command = ee_pos
            self._enter(Mode.RUN, "run requested")
        log.info("run: policy at %.0f Hz, control at %.0f Hz", self.bundle.manifest.policy_hz, self.profile.control_hz)
        return "run"

    def stop(self) -> str:
        with self._lock:
            if self.mode != Mode.DAMP:
                log.info("stop requested in %s: damping", self.mode)
                self._enter(Mode.DAMP, "stop requested")
        return "damp"

    def estop(self) -> None:
        """E-stop input: the next tick trips to Damp (within one control period)."""
        self._estop = True

    def reset(self) -> str:
        """Damp -> Passive, once the e-stop is released."""
        with self._lock:
            if self.mode != Mode.DAMP:
                return f"reset ignored: runtime is in {self.mode}"
            if self.last_state is not None and self.last_state.estop:
                return "reset refused: the robot's e-stop is still pressed"
            self._estop = False
            self._enter(Mode.PASSIVE, "reset requested")
        return "passive"

    @property
    def last_trip(self) -> Trip | None:
        return self.trips[-1] if self.trips else None

    # -- the control tick -------------------------------------------------------------------------------------
    def _reset_run(self) -> None:
        self.last_action = np.zeros(len(self.default))
        self._previous_action = self.last_action
        self._from = self._to = self._target.copy()
        self._k = 0
        self._run_ticks = 0
        self._submitted_at: float | None = None  # the unanswered policy request, if any
        self.worker.discard()  # a result or a request left from an earlier run is not this run's
        self.observations.reset()
        if self.filter is not None:
            self.filter.reset()
        if hasattr(self.worker.policy, "reset"):  # a chunked policy's action queue
            self.worker.policy.reset()
        self._subgoal_set = False  # a waypoint follower: neither a path nor a hold point yet in this run
        if self.high is not None:  # the high level decides from the first policy step; until then, stand
            self._high_obs.reset()
            self.command = np.zeros(len(self._command_low))

    def _enter(self, mode: Mode, reason: str, now: float | None = None) -> None:
        """Change mode (caller holds the lock) and record it in the timeline."""
        now = self.clock() if now is None else now
        self.timeline.append(Transition(time=now - self._start_time, tick=self.ticks, from_mode=str(self.mode),
                                        to_mode=str(mode), reason=reason))
        self.mode = mode
        if mode == Mode.DAMP:
            self.damp_since, self.hold_ended = now, None

    def _trip(self, reason: str, now: float) -> None:
        self.trips.append(Trip(time=now - self._start_time, tick=self.ticks, mode=str(self.mode), reason=reason))
        log.error("safety trip in %s: %s -> damp", self.mode, reason)
        self._enter(Mode.DAMP, f"safety trip: {reason}", now)

    def _to_robot(self, q: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> JointCommand:
        n = self.n_robot
        cmd = JointCommand(q=np.zeros(n), dq=np.zeros(n), kp=np.zeros(n), kd=np.full(n, self.profile.damping_kd),
                           tau=np.zeros(n))
        if self.last_state is not None:
            cmd.q[:] = np.nan_to_num(self.last_state.q)
        cmd.q[self.index], cmd.kp[self.index], cmd.kd[self.index] = q, kp, kd
        return cmd

    def _damp(self) -> JointCommand:
        n = self.n_robot
        q = np.nan_to_num(self.last_state.q) if self.last_state is not None else np.zeros(n)
        return JointCommand.damping(q, self.profile.damping_kd)

    def tick(self) -> Mode:
        """One control period: read, check, command, write. Returns the mode after the tick.
        Any exception inside (transport, policy, kinematics) trips to Damp instead of ending the loop."""
        now = self.clock()
        self.ticks += 1
        with self._lock:
            try:
                cmd = self._control(self.robot.read(), now)
            except Exception as exc:
                if self.mode != Mode.DAMP:  # one trip per fault: a transport that keeps failing is not a new trip
                    self._trip(f"runtime error: {type(exc).__name__}: {exc}", now)
                else:
                    log.error("runtime error in damp: %s: %s", type(exc).__name__, exc)
                cmd = self._damp()
            if self._hold_over(now):
                return self.mode  # a position-only Damp held for damp_hold_s: publish nothing more
        try:
            self.robot.write(cmd)
        except Exception as exc:
            with self._lock:
                if self.mode != Mode.DAMP:
                    self._trip(f"cannot write to the robot: {type(exc).__name__}: {exc}", now)
                else:
                    log.error("write failed in damp: %s", exc)
        return self.mode

    def _hold_over(self, now: float) -> bool:
        """Whether a position-only Damp (a hold of the measured position) has lasted damp_hold_s (logged once)."""
        if not self.position_only or self.mode != Mode.DAMP or self.damp_since is None:
            return False
        if self.hold_ended is None:
            if now - self.damp_since < self.profile.damp_hold_s:
                return False
            self.hold_ended = now
            log.warning("damp on a position-only interface: held the measured position for %g s (damp_hold_s); "
                        "no longer publishing commands", self.profile.damp_hold_s)
        return True

    def _control(self, state: RobotState | None, now: float) -> JointCommand:
        if state is not None:
            self.last_state = state
        if self.mode == Mode.DAMP:
            return self._damp()
        if self._estop or (state is not None and state.estop):
            self._trip("e-stop", now)
            return self._damp()
        if self.mode == Mode.PASSIVE:  # zero torque is safe whatever the state; stand() checks it before leaving
            if state is not None:
                self._target = np.nan_to_num(state.q[self.index])
            return JointCommand.zeros(self.n_robot)
        if state is None:
            self._trip("no robot state received", now)
            return self._damp()
        q, dq = state.q[self.index], state.dq[self.index]
        reason = self.safety.check_state(q, dq, state.quat, state.gyro, now - state.stamp, active=True)
        if reason is not None:
            self._trip(reason, now)
            return self._damp()
        if self.mode == Mode.STAND:
            alpha = self.stand_progress()
            target, kp, kd = (1 - alpha) * self._stand_from + alpha * self.default, self.stand_kp, self.stand_kd
        else:
            reason = self._policy_step(state, q, dq, now)
            if reason is not None:
                self._trip(reason, now)
                return self._damp()
            self._k += 1
            alpha = 1.0 if self.hold_targets else min(1.0, self._k / self.policy_every)
            kp, kd = self.kp, self.kd
            if self.filter is not None or self._critic_missing is not None:
                reason, scale = self._filter_step(state, q, dq, now)
                if reason is not None:
                    self._trip(reason, now)
                    return self._damp()
                kp, kd = kp * scale, kd * scale
            target = self._from + (self._to - self._from) * alpha
        safe, reason = self.safety.filter_targets(target, self._target, q, dq, kp, kd)
        if reason is not None:
            self._trip(reason, now)
            return self._damp()
        self._target = safe
        return self._to_robot(safe, kp, kd)

    def _policy_step(self, state: RobotState, q: np.ndarray, dq: np.ndarray, now: float) -> str | None:
        m = self.bundle.manifest
        result = self.worker.poll()
        if result is not None:
            actions, latency, error = result
            self.stats.policy_latency.append(latency)
            if error is not None:
                return f"policy raised {error}"
            if actions.shape != (m.action.dim,) or not np.all(np.isfinite(actions)):
                return SafetyLayer.check_finite("action", actions) or f"policy returned shape {actions.shape}"
            self._previous_action = self.last_action  # what the observation that chose this action held
            self.last_action = m.apply_action_clip(actions)
            self._from, self._to, self._k = self._target.copy(), self._action_targets(self.last_action), 0
            self._submitted_at = None
        elif self._submitted_at is not None:
            waited_ms, limit_ms = (now - self._submitted_at) * 1000.0, self.profile.safety.policy_timeout_ms
            if waited_ms > limit_ms:
                return f"policy stalled: no answer for {waited_ms:.0f} ms (limit {limit_ms:g} ms)"
        if self._run_ticks % self.policy_every == 0:
            ee_pos = None
            if self.kinematics is not None:
                ee_pos = self.kinematics.fk(q)
            object_pose = None
            if self.objects is not None:
                object_pose, reason = self._object_pose(now)
                if reason is not None:
                    return reason
            nav: dict[str, np.ndarray] = {}
            if self.follower is not None:
                nav, reason = self._follow(now)
                if reason is not None:
                    return reason
            measured = Measurement(q=q, dq=dq, command=self.command, last_action=self.last_action, quat=state.quat,
                                   gyro=state.gyro, ee_pos=ee_pos, object_pose=object_pose, **nav)
            obs = self.observations.build(measured)
            reason = SafetyLayer.check_finite("observation", obs)
            if reason is not None:
                return reason
            if self.filter is not None:  # a critic with a history reads the frames of the policy steps
                self.filter.observe(self.observations.frames[-1])
            if self.cameras:
                frames, reason = self._camera_frames(now)
                if reason is not None:
                    return reason
                obs = (obs, frames)
            if self.worker.submit(obs):
                self._submitted_at = now
            elif self._submitted_at is None:  # a discarded request of an earlier run still runs: wait from now
                self._submitted_at = now
            # else: the previous request is still running; the watchdog above decides when that is a stall
            if self.high is not None and (self._run_ticks // self.policy_every) % self.high_every == 0:
                reason = self._decide(measured)  # after the low level's observation, as in training
                if reason is not None:
                    return reason
        self._run_ticks += 1
        return None

    def _object_pose(self, now: float) -> tuple[np.ndarray | None, str | None]:
        """(the object's pose [7], None) from the object source, or (None, why the robot must damp)."""
        reading = self.objects()
        limit_ms = self.profile.safety.object_timeout_ms
        if reading is None:
            return None, "no object pose received"
        pose, stamp = reading
        pose = np.asarray(pose, dtype=float)
        if pose.shape != (7,) or not np.all(np.isfinite(pose)):
            return None, (SafetyLayer.check_finite("object pose", pose)
                          or f"object pose has shape {pose.shape}, not (7,)")
        age_ms = (now - stamp) * 1000.0
        if age_ms > limit_ms:
            return None, f"object pose is stale: {age_ms:.0f} ms old (limit {limit_ms:g} ms)"
        return pose, None

    def _decide(self, measured: Measurement) -> str | None:
        """One high-level step: its observation (with the command it set last), its graph, the new command."""
        obs = self._high_obs.build(measured)
        reason = SafetyLayer.check_finite("high-level observation", obs)
        if reason is not None:
            return reason
        start = time.perf_counter()
        out = np.asarray(self._high_graph(obs), dtype=float)
        self.stats.high_latency.append(time.perf_counter() - start)
        reason = SafetyLayer.check_finite("high-level output", out)
        if reason is not None or out.shape != self._command_low.shape:
            return reason or f"high level returned shape {out.shape}, expected {self._command_low.shape}"
        a = np.clip(out, -1.0, 1.0)
        self.command = self._command_low + (a + 1.0) / 2.0 * (self._command_high - self._command_low)
        self.decisions += 1
        return None

    def _follow(self, now: float) -> tuple[dict[str, np.ndarray], str | None]:
        """A waypoint follower's observation terms from the base pose, the path and the grid, or the reason to damp:
        no or a stale base pose, a path the source rejected, a followed path gone stale before its goal, no grid.
        Until a fresh path arrives the robot holds where Run found it."""
        f, nav, safety = self.follower, self.navigation, self.profile.safety
        reading = nav.pose()
        if reading is None:
            return {}, "no base pose received (the path follower's odometry)"
        pose, stamp = np.asarray(reading[0], dtype=float), reading[1]
        if pose.shape != (3,) or not np.all(np.isfinite(pose)):
            return {}, f"base pose (x, y, yaw) = {pose.tolist()} is not 3 finite numbers"
        age_ms = (now - stamp) * 1000.0
        if age_ms > safety.pose_timeout_ms:
            return {}, f"base pose is stale: {age_ms:.0f} ms old (limit {safety.pose_timeout_ms:g} ms)"
        try:
            path = nav.path()
        except ValueError as exc:
            return {}, f"path rejected: {exc}"
        limit_ms = safety.path_timeout_ms
        if path is not None and path[1] != f.stamp and (limit_ms <= 0 or (now - path[1]) * 1000.0 <= limit_ms):
            try:
                f.set_path(path[0], path[1])
            except ValueError as exc:
                return {}, f"path rejected: {exc}"
            self._subgoal_set = True
        elif not self._subgoal_set:
            f.hold(pose[:2])
            self._subgoal_set = True
        if f.stamp is not None and not f.reached and limit_ms > 0 and (now - f.stamp) * 1000.0 > limit_ms:
            return {}, (f"path is stale: the followed path is {(now - f.stamp) * 1000.0:.0f} ms old and its goal is "
                        f"not reached (limit safety.path_timeout_ms {limit_ms:g} ms)")
        f.update(pose[:2], pose[2])
        out = {"waypoints": f.waypoints(), "goal_pos": f.goal_pos()}
        if self._scans:
            grid = nav.grid()
            if grid is None:
                return {}, "no occupancy grid received (the policy's occupancy scan)"
            out["occupancy_scan"] = f.scan(grid)
        if self._clearance_scans:
            clearance = nav.clearance()
            if clearance is None:
                return {}, "no clearance grid received (the policy's clearance scan)"
            out["clearance_scan"] = f.clearance_scan(clearance)
        return out, None

    def _camera_frames(self, now: float) -> tuple[list[np.ndarray], str | None]:
        """The newest frame of each camera, or the reason to damp (a camera that raised, or a stale frame)."""
        frames = []
        limit_ms = self.profile.safety.camera_timeout_ms
        for name, source in self.cameras:
            try:
                frame, stamp = source()
            except Exception as exc:  # noqa: BLE001 - a camera fault damps, naming the camera
                return [], f"camera {name}: {type(exc).__name__}: {exc}"
            age_ms = (now - stamp) * 1000.0
            if age_ms > limit_ms:
                return [], f"camera {name}: the newest frame is {age_ms:.0f} ms old (limit {limit_ms:g} ms)"
            frames.append(frame)
        return frames, None

    def _action_targets(self, action: np.ndarray) -> np.ndarray:
        """Joint targets (policy order) for an action as applied (clipped), per the bundle's `action.type`."""
        m = self.bundle.manifest
        if self.ee is None:
            return self.default + m.action_scale * action
        ee = self.ee
        if m.action.type == "ee_target":  # toward the commanded position, at most `scale` per axis and step
            step = np.clip(action[:3] - self._ee_target, -m.action_scale, m.action_scale)
        else:
            step = m.action_scale * np.clip(action[:3], -1.0, 1.0)
        self._ee_target = np.clip(self._ee_target + step, *self._ws)
        q = self._ik.ik(self._to, self._ee_target, self._ee_rot, damping=ee.ik_damping, iterations=ee.ik_iterations)
        q = np.clip(q, self._joint_low, self._joint_high)
        q[self._grip_index] = ee.gripper_open * (1.0 - (np.clip(action[3], -1.0, 1.0) + 1.0) / 2.0)
        return q

    def _filter_step(self, state: RobotState, q: np.ndarray, dq: np.ndarray, now: float) -> tuple[str | None, float]:
        """Score the executed action in the state just measured; a replacing candidate becomes the action (and the
        next observation's last action). The frame holds the action before it as `last_action`, as the
        observation that chose it did (and as Q_risk was trained). Returns (a reason to damp or None, the gain
        scale)."""
        if self.filter is None:
            return self._critic_missing, 1.0
        ee_pos = self.kinematics.fk(q) if self.kinematics is not None else None
        frame = self.observations.frame(Measurement(q=q, dq=dq, command=self.command,
                                                    last_action=self._previous_action, quat=state.quat,
                                                    gyro=state.gyro, ee_pos=ee_pos))
        measured = None  # the action that holds the joints where they are, when the candidates head there
        if self.filter.cfg.shrink_toward == "measured":
            measured = (q - self.default) / self.bundle.manifest.action_scale
        decision = self.filter.decide(frame, self.last_action, now, measured)
        if decision.damp is not None:
            return decision.damp, 1.0
        if decision.replaced:
            m = self.bundle.manifest
            self.last_action = m.apply_action_clip(decision.action.astype(float))
            self._to = self.default + m.action_scale * self.last_action
        return None, self.filter.gain_scale(now)

    # -- real time ------------------------------------------------------------------------------------------
    def spin(self, duration: float | None = None, *, stop: threading.Event | None = None,
             on_tick: Callable[[DeployRuntime], None] | None = None) -> None:
        """Tick at the control rate until `duration` seconds pass or `stop` is set."""
        stop = stop or threading.Event()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a collection pause is a missed deadline; the loop allocates no reference cycles
        was_on = os.sched_getaffinity(0) if self._control_cpus else None
        if self._control_cpus:
            _set_affinity(self._control_cpus)
        try:
            self._spin(duration, stop, on_tick)
        finally:
            if gc_was_enabled:
                gc.enable()
            if was_on is not None:
                _set_affinity(was_on)

    def _spin(self, duration: float | None, stop: threading.Event,
              on_tick: Callable[[DeployRuntime], None] | None) -> None:
        dt = self.dt
        start = time.perf_counter()
        deadline = start
        last = None
        while not stop.is_set() and (duration is None or deadline - start < duration):
            t0 = time.perf_counter()
            if last is not None:
                self.stats.periods.append(t0 - last)
            last = t0
            busy = self.worker.busy
            self.tick()
            if on_tick is not None:
                on_tick(self)
            busy = busy or self.worker.busy
            self.stats.busy_ticks += busy
            self.stats.compute.append(time.perf_counter() - t0)
            deadline += dt
            remaining = deadline - time.perf_counter()
            if remaining < 0:
                self.stats.overruns += 1
                self.stats.overruns_busy += busy
                if remaining < -dt:  # more than a period late: do not try to catch up with a burst of ticks
                    deadline = time.perf_counter()
                continue
            if remaining > SPIN_S:
                time.sleep(remaining - SPIN_S)
            while time.perf_counter() < deadline:
                pass

    def close(self) -> None:
        self.worker.close()
