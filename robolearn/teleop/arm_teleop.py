"""Teleoperate a real arm (or its MuJoCo twin) through the deploy runtime's robot interfaces.

Each control tick:

    device twist -> end-effector target (integrated at up to `max_speed`, clamped to the workspace box)
      -> damped least-squares IK (the same step the simulated tasks use, robolearn.sim.ik)
      -> SafetyLayer (targets clamped into the joint range, rate-limited, torque-clipped)
      -> JointCommand (the robot model's PD gains) -> robot.write

Fail-safe: stale or NaN state, NaN or far-out-of-range targets, or any exception damps the arm (kp 0, kd from the
profile) and latches until `reset()`. A leader arm (`TeleopCommand.joint_pos`) bypasses the IK: its joints are the
targets, through the same safety layer. A silent or stale leader holds the last target.
"""

from __future__ import annotations

import logging
import time

import mujoco
import numpy as np

from robolearn.deploy.interface import JointCommand, RobotInterface, RobotState
from robolearn.deploy.profile import HardwareProfile
from robolearn.deploy.safety import SafetyLayer
from robolearn.errors import ConfigError, RobolearnError
from robolearn.sim.ik import dls_ik
from robolearn.sim.robots.robot_cfg import load_robot_cfg
from robolearn.sim.robots.urdf_import import resolve_urdf_path, urdf_velocity_limits
from robolearn.sim.scene import robot_info
from robolearn.twin.kinematics import ArmKinematics

__all__ = ["ArmTeleop"]

log = logging.getLogger("robolearn.teleop")


class ArmTeleop:
    """Device commands -> safe joint commands for the arm of `profile`, in the robot's joint order."""

    def __init__(self, profile: HardwareProfile, robot: RobotInterface, *, max_speed: float = 0.1,
                 workspace_low: tuple[float, float, float] = (0.25, -0.4, 0.05),
                 workspace_high: tuple[float, float, float] = (0.75, 0.4, 0.7)) -> None:
        if profile.kind != "arm":
            raise ConfigError(f"{profile.source}: teleop drives arms; {profile.name} is a {profile.kind} robot")
        missing = [j for j in profile.joint_names if j not in robot.joint_names]
        if missing:
            raise ConfigError(f"robot {profile.name}: joints {missing} of the profile are not reported by the robot "
                              f"(it has {', '.join(robot.joint_names)})")
        self.profile, self.robot = profile, robot
        self.kin = ArmKinematics(profile.model, profile.joint_names)
        cfg = load_robot_cfg(profile.model)
        info = robot_info(self.kin.model, cfg)
        names = list(info.joint_names)
        order = [names.index(j) for j in profile.joint_names]
        velocity = urdf_velocity_limits(resolve_urdf_path(cfg.urdf, relative_to=cfg.folder))
        self.kp, self.kd = info.kp[order], info.kd[order]
        self.dt = 1.0 / profile.control_hz
        self.safety = SafetyLayer(profile.safety, joint_names=list(profile.joint_names),
                                  pos_limits=info.joint_range[order],
                                  vel_limits=np.array([velocity.get(j, np.inf) for j in profile.joint_names]),
                                  torque_limits=info.effort_limit[order], control_dt=self.dt, legged=False)
        self.index = np.array([robot.joint_names.index(j) for j in profile.joint_names])  # profile -> robot order
        self.max_step = max_speed * self.dt
        self.lo, self.hi = np.asarray(workspace_low, dtype=float), np.asarray(workspace_high, dtype=float)
        self.fingers = [i for i, j in enumerate(profile.joint_names) if "finger" in j or j == "gripper"]
        self.damped: str | None = None  # the reason, once tripped
        self.target_q: np.ndarray | None = None
        self.ee_target: np.ndarray | None = None
        self.ee_quat = np.zeros(4)
        self.last_state: RobotState | None = None

    def reset(self) -> None:
        """Leave Damp: the next tick holds the measured pose and continues from there."""
        self.damped, self.target_q, self.ee_target = None, None, None

    def _damp(self, reason: str) -> None:
        if self.damped is None:
            log.error("teleop damps the arm: %s", reason)
            self.damped = reason

    def tick(self, cmd=None) -> JointCommand:
        """One control period: read the robot, follow `cmd` (a TeleopCommand or None: hold), write the command."""
        try:
            out = self._tick(cmd)
        except Exception as exc:  # anything unexpected: damp, never leave the arm on its last target
            self._damp(f"{type(exc).__name__}: {exc}")
            out = None
        if out is None:
            q = self.last_state.q if self.last_state is not None else np.zeros(len(self.robot.joint_names))
            out = JointCommand.damping(q, self.profile.damping_kd)
        self.robot.write(out)
        return out

    def _tick(self, cmd) -> JointCommand | None:
        state = self.robot.read()
        if self.damped is not None:
            if state is not None:
                self.last_state = state
            return None
        if state is None:
            return None if self.last_state is None else self._hold_last()
        self.last_state = state
        q, dq = state.q[self.index], state.dq[self.index]
        reason = self.safety.check_state(q, dq, None, None, time.monotonic() - state.stamp, active=True)
        if reason is not None:
            self._damp(reason)
            return None
        if self.target_q is None:  # start (or restart) from where the arm is
            self.target_q = q.copy()
            self.kin.update(q)
            pos, rot = self.kin.ee_pose()
            self.ee_target = pos
            mujoco.mju_mat2Quat(self.ee_quat, rot.ravel())
        goal = self.target_q.copy()
        if cmd is not None and cmd.joint_pos is not None:  # leader arm: its joints are the targets
            goal = np.asarray(cmd.joint_pos, dtype=float)[: len(goal)].copy()
        elif cmd is not None:
            twist = np.clip(np.asarray(cmd.twist[:3], dtype=float), -1.0, 1.0)
            self.ee_target = np.clip(self.ee_target + twist * self.max_step, self.lo, self.hi)
            arm = [i for i in range(len(goal)) if i not in self.fingers]
            goal[arm] = dls_ik(self.kin.model, self.kin.data, self.kin.site, self.kin.qpos_adr[arm],
                               self.kin.dof_adr[arm], goal[arm], self.ee_target, self.ee_quat)
        if cmd is not None and self.fingers:
            lo, hi = self.safety.lo[self.fingers], self.safety.hi[self.fingers]
            goal[self.fingers] = hi - np.clip(cmd.gripper, 0.0, 1.0) * (hi - lo)  # 0 open (upper), 1 closed
        safe, reason = self.safety.filter_targets(goal, self.target_q, q, dq, self.kp, self.kd)
        if reason is not None:
            self._damp(reason)
            return None
        self.target_q = safe
        return self._command(safe)

    def _hold_last(self) -> JointCommand | None:
        return self._command(self.target_q) if self.target_q is not None else None

    def _command(self, target: np.ndarray) -> JointCommand:
        n = len(self.robot.joint_names)
        cmd = JointCommand.damping(self.last_state.q, self.profile.damping_kd)  # joints the profile does not use
        cmd.q = cmd.q.copy()
        cmd.q[self.index], cmd.kp[self.index], cmd.kd[self.index] = target, self.kp, self.kd
        cmd.dq, cmd.tau = np.zeros(n), np.zeros(n)
        return cmd

    def spin(self, duration: float, read_command=None, on_tick=None) -> None:
        """Run ticks at the profile's rate for `duration` s; `read_command() -> TeleopCommand | None` each tick."""
        next_tick = time.perf_counter()
        end = next_tick + duration
        while time.perf_counter() < end:
            self.tick(read_command() if read_command is not None else None)
            if on_tick is not None:
                on_tick(self)
            next_tick += self.dt
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.perf_counter()


def arm_features(teleop: ArmTeleop, camera_shape: tuple[int, int] | None) -> dict:
    """LeRobot features of a real-arm recording: measured joints, commanded joint targets, the teleop twist."""
    from robolearn.data import FeatureSpec

    names = tuple(teleop.profile.joint_names)
    features = {
        "observation.state": FeatureSpec("float32", (len(names),), names),
        "action": FeatureSpec("float32", (len(names),), names),
        "teleop.twist": FeatureSpec("float32", (6,), ("vx", "vy", "vz", "wx", "wy", "wz")),
        "next.done": FeatureSpec("bool", (1,)),
        "intervention": FeatureSpec("bool", (1,)),
    }
    if camera_shape is not None:
        features["observation.images.camera"] = FeatureSpec("video", (*camera_shape, 3))
        # seconds between the frame's capture and the joint state of the same row (image-state alignment)
        features["observation.camera_age_s"] = FeatureSpec("float32", (1,))
    return features


def record_arm_teleop(teleop: ArmTeleop, device, *, duration: float, dataset=None, fps: int = 30,
                      episodes: int = 1_000_000, language: str = "teleoperation", camera=None,
                      camera_shape: tuple[int, int] | None = None, on_status=None) -> dict:
    """Spin `teleop` at the profile's rate driven by `device` for `duration` s (or until `episodes` are saved or
    the device says quit); with `dataset`, record a frame every control_hz / fps ticks. `camera() -> (uint8
    [H, W, 3], capture time on time.monotonic()) | None` adds an image and its age against the row's joint state
    (None: no frame yet, recorded black with age -1); a camera may raise (robolearn.teleop.camera.CameraError for a
    disconnect): recording stops, the episode is dropped and the arm damped. Device events: save,
    discard/rerecord (drop the episode), quit."""
    writer = None
    if dataset is not None:
        from robolearn.data import DatasetWriter

        writer = DatasetWriter(dataset, fps=fps, features=arm_features(teleop, camera_shape),
                               robot_type=teleop.profile.name)
        writer.start_episode(language)
    every = max(1, int(round(teleop.profile.control_hz / fps)))
    report = {"ticks": 0, "frames": 0, "episodes_saved": 0, "episodes_discarded": 0, "damped": None}
    last = {"cmd": None, "events": []}
    stop = {"now": False}

    def read_command():
        cmd = device.read()
        last["cmd"] = cmd
        last["events"] += cmd.events
        return cmd

    def on_tick(t: ArmTeleop) -> None:
        report["ticks"] += 1
        events, last["events"] = last["events"], []
        if "quit" in events:
            stop["now"] = True
        if writer is None or t.last_state is None or t.target_q is None or stop["now"]:
            return  # stop["now"]: the last episode was saved (or quit); ticks until spin returns record nothing
        if report["ticks"] % every == 0:
            cmd = last["cmd"]
            frame = {
                "observation.state": t.last_state.q[t.index].astype(np.float32),
                "action": t.target_q.astype(np.float32),
                "teleop.twist": np.asarray(cmd.twist if cmd is not None else np.zeros(6), dtype=np.float32),
                "next.done": np.array(["save" in events], dtype=bool),
                "intervention": np.array([False]),
            }
            if camera_shape is not None:
                state_time = time.monotonic()
                got = camera() if camera is not None else None
                image, stamp = got if got is not None else (None, None)
                if image is not None and image.shape[:2] != tuple(camera_shape):
                    raise RobolearnError(f"camera frame {image.shape[:2]} does not match the recorded size "
                                         f"{tuple(camera_shape)}")
                frame["observation.images.camera"] = image if image is not None else np.zeros((*camera_shape, 3),
                                                                                              np.uint8)
                frame["observation.camera_age_s"] = np.array([-1.0 if stamp is None else state_time - stamp],
                                                             np.float32)
            writer.add_frame(frame)
            report["frames"] += 1
        if "save" in events and writer.episode_frames > 0:
            writer.save_episode()
            report["episodes_saved"] += 1
            if report["episodes_saved"] >= episodes:
                stop["now"] = True
            else:
                writer.start_episode(language)
        elif "discard" in events or "rerecord" in events:
            writer.discard_episode()
            report["episodes_discarded"] += 1
            writer.start_episode(language)
        if on_status is not None and report["ticks"] % 100 == 0:
            on_status(t, report)

    end = time.perf_counter() + duration
    start_ee = None
    try:
        first = teleop.robot.read()
        if first is not None:
            start_ee = teleop.kin.fk(first.q[teleop.index])
        while not stop["now"] and time.perf_counter() < end:
            teleop.spin(min(0.2, end - time.perf_counter()), read_command=read_command, on_tick=on_tick)
    finally:
        # The session ends damped: the arm is never left on its last target.
        teleop.robot.write(JointCommand.damping(teleop.last_state.q if teleop.last_state is not None
                                                else np.zeros(len(teleop.robot.joint_names)),
                                                teleop.profile.damping_kd))
        if writer is not None:
            writer.close()  # an episode not saved is discarded
    report["damped"] = teleop.damped
    if teleop.last_state is not None:
        report["ee_pos_m"] = [round(float(x), 4) for x in teleop.kin.fk(teleop.last_state.q[teleop.index])]
    if start_ee is not None:
        report["ee_start_m"] = [round(float(x), 4) for x in start_ee]
    return report
