"""A simulated robot behind the same `RobotInterface` as a real one: the sim2real rehearsal transport.

The robot is the same MuJoCo model the tasks train on (URDF import + floor), but driven like hardware: every
physics step applies the latest `JointCommand` with motor-driver semantics (`pd_torque`, clipped to the
URDF effort limits), the IMU reads the base orientation and body-frame angular velocity, and faults can be
injected (`inject_fault`) to rehearse the safety layer: the state stops updating, the state turns NaN.

`lockstep=True`: every `write` advances the simulation by one control period, so the caller's loop paces the
robot (the deploy runtime at real time). `lockstep=False`: the owner calls `advance()` on its own clock
(the DDS robot server).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import mujoco
import numpy as np

from robolearn.deploy.interface import JointCommand, RobotInterface, RobotState, pd_torque
from robolearn.deploy.profile import HardwareProfile
from robolearn.errors import ConfigError
from robolearn.sim.robots.robot_cfg import load_robot_cfg, match_joints
from robolearn.sim.scene import build_robot_scene, robot_info

__all__ = ["SimRobot", "FAULTS", "robot_from_profile"]

FAULTS = ("none", "stale_state", "nan_state")
MAX_PHYSICS_DT = 0.002


class SimRobot(RobotInterface):
    """MuJoCo robot with motor-driver PD; `joint_names` in the given order (default: the model's)."""

    def __init__(self, robot: str, control_dt: float = 0.002, *, joint_names: list[str] | None = None,
                 start: Literal["lying", "standing"] = "standing", start_pose: dict[str, float] | None = None,
                 lockstep: bool = True, scene: Callable[[mujoco.MjSpec], None] | None = None) -> None:
        self.cfg = load_robot_cfg(robot)
        self.substeps = max(1, int(np.ceil(control_dt / MAX_PHYSICS_DT - 1e-9)))
        self.control_dt = control_dt
        spec = build_robot_scene(self.cfg, timestep=control_dt / self.substeps)
        if scene is not None:  # objects around the robot (a tabletop's block)
            scene(spec)
        self.model = spec.compile()
        info = robot_info(self.model, self.cfg)
        # Actuators become inert: torques enter through qfrc_applied, computed here like a motor driver would.
        self.model.actuator_gainprm[:] = 0.0
        self.model.actuator_biasprm[:] = 0.0
        self.data = mujoco.MjData(self.model)
        model_joints = list(info.joint_names)
        self.joint_names = list(joint_names) if joint_names is not None else model_joints
        missing = [j for j in self.joint_names if j not in model_joints]
        if missing or len(self.joint_names) != len(model_joints):
            raise ConfigError(f"sim robot {robot}: joint names {missing or self.joint_names} do not match the "
                              f"model's joints {model_joints}")
        order = [model_joints.index(j) for j in self.joint_names]
        self.qpos_adr = info.qpos_adr[order]
        self.qvel_adr = info.qvel_adr[order]
        self.effort_limit = info.effort_limit[order]
        self.kp, self.kd = info.kp[order], info.kd[order]  # the declared drive gains (sim/robots/<robot>.yaml)
        self.floating_base = info.floating_base
        self.lockstep = lockstep
        self.fault = "none"
        self.steps = 0
        self._cmd = JointCommand.damping(np.zeros(len(order)), 0.0)
        self._tau = np.zeros(len(order))
        self._stale: RobotState | None = None

        default = np.array(match_joints(self.cfg.default_joint_pos, self.joint_names, f"robot {robot}"))
        pose = default if start_pose is None else np.array(
            match_joints(start_pose, self.joint_names, f"sim robot {robot}: start_pose"))
        self.data.qpos[self.qpos_adr] = pose
        if self.floating_base:
            self.data.qpos[2] = self.cfg.init_height if start == "standing" else 0.25
        mujoco.mj_forward(self.model, self.data)
        # Settle on the floor holding the start pose, so the first reading is a robot at rest.
        settle = JointCommand(q=pose, dq=np.zeros_like(pose), kp=self.kp, kd=self.kd, tau=np.zeros_like(pose))
        self._cmd = settle
        for _ in range(int(1.0 / control_dt)):
            self.advance()
        self._cmd = JointCommand.zeros(len(order))
        self.steps = 0

    # -- RobotInterface ----------------------------------------------------------------------------------
    def read(self) -> RobotState:
        if self.fault == "stale_state":
            if self._stale is None:
                self._stale = self._measure()
            return self._stale
        state = self._measure()
        if self.fault == "nan_state":
            state.q = state.q.copy()
            state.q[0] = np.nan
        return state

    def write(self, cmd: JointCommand) -> None:
        self._cmd = cmd
        if self.lockstep:
            self.advance()

    # -- simulation --------------------------------------------------------------------------------------
    def advance(self) -> None:
        """Step physics by one control period, applying the latest command at every physics step."""
        d = self.data
        for _ in range(self.substeps):
            self._tau = pd_torque(self._cmd, d.qpos[self.qpos_adr], d.qvel[self.qvel_adr], self.effort_limit)
            d.qfrc_applied[self.qvel_adr] = self._tau
            mujoco.mj_step(self.model, d)
        self.steps += 1

    def inject_fault(self, fault: str) -> None:
        """Rehearse a fault: 'stale_state' (readings stop updating), 'nan_state', or 'none' to clear."""
        if fault not in FAULTS:
            raise ConfigError(f"unknown fault {fault!r}; valid faults: {', '.join(FAULTS)}")
        self.fault = fault
        self._stale = None

    def _measure(self) -> RobotState:
        d = self.data
        state = RobotState(stamp=time.monotonic(), q=d.qpos[self.qpos_adr].copy(), dq=d.qvel[self.qvel_adr].copy(),
                           tau=self._tau.copy())
        if self.floating_base:
            state.quat = d.qpos[3:7].copy()
            state.gyro = d.qvel[3:6].copy()  # free joint: body-frame angular velocity
        return state

    # -- ground truth (for rehearsal reports and tests; a real robot has none) ---------------------------
    @property
    def base_pos(self) -> np.ndarray:
        return self.data.qpos[0:3].copy()


def robot_from_profile(profile: HardwareProfile) -> SimRobot:
    """The twin of a hardware profile's robot (the `sim` transport): its joint order, control rate and start pose."""
    return SimRobot(profile.model, 1.0 / profile.control_hz, joint_names=profile.joint_names,
                    start=profile.sim.start, start_pose=profile.sim.start_pose)
