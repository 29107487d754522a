"""Tabletop manipulation with an arm and a parallel gripper: push a block to a target, or grasp and lift it.

`action_space: ee` (default): actions are end-effector motions, as a teleoperator gives them: `[dx, dy, dz, grip]`
in [-1, 1], where (dx, dy, dz) * `max_ee_step` moves the commanded end-effector position (base frame, clamped to
the workspace box) and `grip` sets the finger opening (-1 open, +1 closed). Damped least-squares inverse kinematics
turns the commanded pose (position + the start orientation, gripper pointing down) into joint targets for the joint
PD actuators, so the arm moves like a real arm under a Cartesian controller. `action_space: ee_target`: the first
three actions are the commanded end-effector position itself (m, base frame); it is approached by at most
`max_ee_step` per axis and step and clamped to the same box, so a recorded `ee` episode replays exactly as targets
(`ee_targets_from_motions`). `action_space: joint`: actions are
absolute arm joint positions (rad, policy joint order) plus `grip`, as a leader arm gives them (leader-follower).
The IK runs once per policy step and env on a scratch `MjData` (kinematics only, ~0.1 ms): these tasks record
demonstrations and train on tens of envs, not thousands.

A fixed camera (`cameras`) looks at the workspace; `robolearn.sim.render.CameraRig` renders it offscreen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np
import torch

from robolearn.errors import ConfigError
from robolearn.sim.ik import dls_ik
from robolearn.sim.math import sample_uniform, yaw_quat
from robolearn.sim.tasks.base import ObsTermCfg, Task, TaskCfg

__all__ = ["ACTION_SPACES", "CameraCfg", "ManipulationCfg", "add_tabletop_objects", "ee_targets_from_motions",
           "ManipulationTask", "PushTask", "LiftTask"]

Range = tuple[float, float]
ACTION_SPACES = ("ee", "ee_target", "joint")


@dataclass(kw_only=True)
class CameraCfg:
    name: str = "front"
    pos: tuple[float, float, float] = (1.5, 0.0, 1.1)  # m, world
    lookat: tuple[float, float, float] = (0.4, 0.0, 0.12)
    fovy: float = 50.0  # degrees
    width: int = 320
    height: int = 240


@dataclass(kw_only=True)
class ManipulationCfg(TaskCfg):
    # ee: [dx, dy, dz, grip], the commanded end effector moves max_ee_step per unit; ee_target: [x, y, z, grip], the
    # commanded end effector moves toward (x, y, z) (m, base frame) by at most max_ee_step per axis and step (a
    # position target: what Diffusion Policy learns best); joint: [arm joint positions..., grip]
    action_space: str = "ee"
    max_ee_step: float = 0.01  # m per policy step at |d| = 1 (0.3 m/s at 30 Hz)
    workspace_low: tuple[float, float, float] = (0.3, -0.3, 0.02)  # commanded end-effector box, base frame
    workspace_high: tuple[float, float, float] = (0.75, 0.3, 0.45)
    finger_open: float = 0.04  # m, finger joint position when open (closed: 0)
    block_size: float = 0.025  # m, half edge of the cube
    block_mass: float = 0.1  # kg
    block_friction: float = 1.0
    block_x: Range = (0.42, 0.6)  # m, initial block position range
    block_y: Range = (-0.15, 0.15)
    block_yaw: Range = (-np.pi, np.pi)
    init_joint_noise: float = 0.02  # rad, arm joints at reset
    ik_damping: float = 0.05
    ik_iterations: int = 2
    cameras: list[CameraCfg] = field(default_factory=lambda: [CameraCfg()])

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high, strict=True)):
            raise ConfigError(f"workspace_low {self.workspace_low} must be below workspace_high {self.workspace_high}")
        if self.action_space not in ACTION_SPACES:
            raise ConfigError(f"action_space must be one of {', '.join(ACTION_SPACES)}, got {self.action_space!r}")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ConfigError(f"camera names must be unique, got {names}")


def ee_targets_from_motions(start: np.ndarray, actions: np.ndarray, cfg: ManipulationCfg) -> np.ndarray:
    """[T, 4] `ee_target` actions (x, y, z, grip) from one episode's recorded `ee` actions [T, 4] (dx, dy, dz, grip)
    and the commanded end-effector position at its start `start` [3] (the measured one: a reset starts there): the
    commanded position after each action, integrated as `action_to_ctrl` does. Executed in `action_space: ee_target`
    from the same start they move the commanded end effector exactly as the motions did."""
    actions = np.asarray(actions, dtype=np.float64)
    low, high = np.asarray(cfg.workspace_low), np.asarray(cfg.workspace_high)
    steps = np.clip(actions[:, :3], -1.0, 1.0) * cfg.max_ee_step
    target = np.asarray(start, dtype=np.float64).reshape(3)
    out = np.empty_like(actions)
    for t, step in enumerate(steps):  # sequential by nature (the clamp), once per episode when loading
        target = np.clip(target + step, low, high)
        out[t, :3] = target
    out[:, 3:] = actions[:, 3:]
    return out.astype(np.float32)


def add_tabletop_objects(spec: mujoco.MjSpec, cfg: ManipulationCfg) -> None:
    """The block (free body `block`) and the goal marker (mocap body `goal`, no collision) of a tabletop task; the
    floor is the table. Shared by the tasks and the Panda twin (`robolearn.twin.tabletop`)."""
    s = cfg.block_size
    block = spec.worldbody.add_body(name="block", pos=[0.5, 0.0, s])
    block.add_freejoint(name="block")
    block.add_geom(name="block", type=mujoco.mjtGeom.mjGEOM_BOX, size=[s, s, s], mass=cfg.block_mass,
                   friction=[cfg.block_friction, 0.01, 0.001], condim=4, rgba=[0.85, 0.35, 0.2, 1.0])
    goal = spec.worldbody.add_body(name="goal", mocap=True, pos=[0.5, 0.0, 0.0])
    goal.add_geom(name="goal", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.03, 0.001, 0],
                  rgba=[0.2, 0.8, 0.3, 0.6], contype=0, conaffinity=0)


class ManipulationTask(Task):
    """Policy observations: joint positions (relative to default), joint velocities, end-effector position, block
    position, goal position, last action. Privileged adds the block's orientation and velocity.

    CPU only: actions become joint targets through per-env IK on the host (see the module doc)."""

    cfg_cls = ManipulationCfg
    cfg: ManipulationCfg
    cpu_only = True

    # -- scene ---------------------------------------------------------------------------------------------
    def add_to_scene(self, spec: mujoco.MjSpec, render: bool) -> None:
        cfg, robot = self.cfg, self.robot_cfg
        if robot.end_effector is None or robot.floating_base:
            raise ConfigError(f"task {self.name}: needs a fixed-base arm with an end_effector site; "
                              f"robot {robot.name} is not one")
        add_tabletop_objects(spec, cfg)
        spec.add_sensor(name="ee_pos", type=mujoco.mjtSensor.mjSENS_FRAMEPOS, objtype=mujoco.mjtObj.mjOBJ_SITE,
                        objname=robot.end_effector)
        for cam in cfg.cameras:
            forward = np.subtract(cam.lookat, cam.pos)
            forward /= np.linalg.norm(forward)
            right = np.cross(forward, [0.0, 0.0, 1.0])
            right /= np.linalg.norm(right)
            up = np.cross(right, forward)
            spec.worldbody.add_camera(name=cam.name, pos=list(cam.pos), xyaxes=[*right, *up], fovy=cam.fovy)
        spec.visual.global_.offwidth = max(640, *(c.width for c in cfg.cameras))
        spec.visual.global_.offheight = max(480, *(c.height for c in cfg.cameras))

    def action_dim(self) -> int:
        if self.cfg.action_space == "joint":
            return sum("finger" not in j for j in self.robot.joint_names) + 1
        return 4

    def action_names(self) -> tuple[str, ...]:
        if self.cfg.action_space == "joint":
            return (*(j for j in self.robot.joint_names if "finger" not in j), "grip")
        return ("x", "y", "z", "grip") if self.cfg.action_space == "ee_target" else ("dx", "dy", "dz", "grip")

    def setup(self) -> None:
        m, n = self.model, self.num_envs
        self._ee_cols = self.sensor("ee_pos")
        self._site = m.site(self.robot_cfg.end_effector).id
        self._block_qpos = int(m.joint("block").qposadr[0])
        self._block_qvel = int(m.joint("block").dofadr[0])
        names = list(self.robot.joint_names)
        self._fingers = [i for i, j in enumerate(names) if "finger" in j]
        self._arm = [i for i in range(self.model.nu) if i not in self._fingers]
        if not self._fingers:
            raise ConfigError(f"task {self.name}: robot {self.robot_cfg.name} has no finger joints (a gripper)")
        self._ik_data = mujoco.MjData(m)
        self._arm_dof = self.robot.qvel_adr[self._arm]
        self._arm_qpos = self.robot.qpos_adr[self._arm]
        lo = torch.tensor(self.cfg.workspace_low)
        hi = torch.tensor(self.cfg.workspace_high)
        self._ws = (lo, hi)
        self.ee_target = torch.zeros(n, 3)
        self.goal = torch.zeros(n, 3)
        self.grip = torch.zeros(n)  # commanded grip in [0, 1] (0 open)
        # Orientation the IK holds: the end effector's at the default pose (gripper pointing down).
        d = self._ik_data
        d.qpos[self.robot.qpos_adr] = self.robot.default_joint_pos
        mujoco.mj_kinematics(m, d)
        self._ee_quat = np.zeros(4)
        mujoco.mju_mat2Quat(self._ee_quat, d.site_xmat[self._site])

    # -- actions -> joint targets ---------------------------------------------------------------------------
    def _ik(self, q: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Joint positions [nu] that put the end effector at `target` [3] with the held orientation, from `q`."""
        q = q.copy()
        q[self._arm] = dls_ik(self.model, self._ik_data, self._site, self._arm_qpos, self._arm_dof, q[self._arm],
                              target, self._ee_quat, damping=self.cfg.ik_damping, iterations=self.cfg.ik_iterations)
        return q

    def action_to_ctrl(self, actions: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        self.grip = (actions[:, -1].clamp(-1.0, 1.0) + 1.0) / 2.0
        targets = self.targets.double().numpy().copy()
        if cfg.action_space == "joint":
            targets[:, self._arm] = actions[:, :-1].double().numpy()
        else:
            lo, hi = self._ws
            if cfg.action_space == "ee_target":
                step = (actions[:, :3] - self.ee_target).clamp(-cfg.max_ee_step, cfg.max_ee_step)
            else:
                step = actions[:, :3].clamp(-1.0, 1.0) * cfg.max_ee_step
            self.ee_target = torch.minimum(torch.maximum(self.ee_target + step, lo), hi)
            ee_target = self.ee_target.double().numpy()
            for env in range(self.num_envs):
                targets[env] = self._ik(targets[env], ee_target[env])
        lo_q, hi_q = self.robot.joint_range[:, 0], self.robot.joint_range[:, 1]
        self.commanded_targets = torch.from_numpy(targets).float()  # before the clamp (reward target_limits)
        targets = np.clip(targets, lo_q, hi_q)
        targets[:, self._fingers] = (cfg.finger_open * (1.0 - self.grip.double().numpy()))[:, None]
        self.targets = torch.from_numpy(targets).float()
        return self.targets.double().unsqueeze(1).expand(-1, cfg.decimation, -1).contiguous()

    # -- resets ---------------------------------------------------------------------------------------------
    def reset_idx(self, mask: torch.Tensor) -> None:
        env_ids = mask.nonzero().flatten()  # a CPU-only task: indices cost no device sync here
        k, g, c = len(env_ids), self.generator, self.cfg
        q = self.default_joint_pos.repeat(k, 1)
        q[:, self._arm] += sample_uniform(-c.init_joint_noise, c.init_joint_noise, (k, len(self._arm)), g)
        block = torch.zeros(k, 7)
        block[:, 0] = sample_uniform(*c.block_x, (k,), g)
        block[:, 1] = sample_uniform(*c.block_y, (k,), g)
        block[:, 2] = c.block_size
        block[:, 3:7] = yaw_quat(sample_uniform(*c.block_yaw, (k,), g))
        self.set_scene(env_ids, q, block, self.sample_goal(block))

    def set_scene(self, env_ids: torch.Tensor, joint_pos: torch.Tensor, block_pose: torch.Tensor,
                  goal: torch.Tensor) -> None:
        """Start `env_ids` from joint positions [k, nu], a block pose [k, 7] (pos, quat) and a goal [k, 3], at rest
        (a reset; also how a recorded episode is replayed from its first frame)."""
        k = len(env_ids)
        full = torch.zeros(k, self.model.nq, dtype=torch.float64)
        full[:, self.robot.qpos_adr] = joint_pos.double()
        full[:, self._block_qpos : self._block_qpos + 7] = block_pose.double()
        self.sim.set_state(env_ids, full, torch.zeros(k, self.model.nv, dtype=torch.float64))
        self.goal[env_ids] = goal.float()
        mask = torch.zeros(self.num_envs, dtype=torch.bool)
        mask[env_ids] = True
        self._clear_episode(mask)
        self.targets[env_ids] = joint_pos.float()
        q = joint_pos.double().numpy()
        for row, env in enumerate(env_ids.tolist()):
            d = self._ik_data
            d.qpos[self.robot.qpos_adr] = q[row]
            mujoco.mj_kinematics(self.model, d)
            self.ee_target[env] = torch.from_numpy(d.site_xpos[self._site].copy()).float()
        self.grip[env_ids] = (1.0 - joint_pos[:, self._fingers].mean(dim=1) / self.cfg.finger_open).clamp(0, 1)

    def restart(self, joint_pos: torch.Tensor, block_pose: torch.Tensor, goal: torch.Tensor,
                env_ids: torch.Tensor | None = None) -> None:
        """`set_scene` and refresh sensors and derived state: a new episode from a given scene (re-recording an
        episode, replaying a recorded one)."""
        env_ids = torch.arange(self.num_envs) if env_ids is None else env_ids
        self.set_scene(env_ids, joint_pos, block_pose, goal)
        self.sensors[env_ids] = self.sim.forward(env_ids).unsqueeze(1)
        self.update_state()

    def sample_goal(self, block: torch.Tensor) -> torch.Tensor:
        """[k, 3] goal positions for new episodes with blocks `block` [k, 7]."""
        raise NotImplementedError

    # -- state and observations -----------------------------------------------------------------------------
    def update_state(self) -> None:
        qpos, qvel = self.sim.qpos.float(), self.sim.qvel.float()
        self.joint_pos = qpos[:, self._qpos_adr]
        self.joint_vel = qvel[:, self._qvel_adr]
        self.ee_pos = self.sensors[:, -1, self._ee_cols].float()
        b = self._block_qpos
        self.block_pos = qpos[:, b : b + 3]
        self.block_quat = qpos[:, b + 3 : b + 7]
        self.block_vel = qvel[:, self._block_qvel : self._block_qvel + 6]
        self.gripper_width = self.joint_pos[:, self._fingers].sum(dim=1)

    def default_observations(self) -> dict[str, list[ObsTermCfg]]:
        policy = [ObsTermCfg(term="joint_pos"), ObsTermCfg(term="joint_vel", scale=0.1), ObsTermCfg(term="ee_pos"),
                  ObsTermCfg(term="object_pos"), ObsTermCfg(term="goal_pos"), ObsTermCfg(term="last_action")]
        return {"policy": policy, "privileged": [ObsTermCfg(group="policy"), ObsTermCfg(term="object_quat"),
                                                 ObsTermCfg(term="object_vel")]}

    def _obs_ee_pos(self) -> torch.Tensor:
        return self.ee_pos

    def _obs_object_pos(self) -> torch.Tensor:
        return self.block_pos

    def _obs_goal_pos(self) -> torch.Tensor:
        return self.goal

    def _obs_object_quat(self) -> torch.Tensor:
        return self.block_quat

    def _obs_object_vel(self) -> torch.Tensor:
        return self.block_vel

    def terminated(self) -> torch.Tensor:
        fell = self.block_pos[:, 2] < -0.05  # pushed off the table / through the floor
        return fell

    def success(self) -> torch.Tensor:
        """[N] bool: the task is achieved in the current state."""
        raise NotImplementedError

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"success_rate": self.success().float()}

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        return {"success": self.success().float()}

    def command_ranges(self) -> dict[str, tuple[float, float]]:
        return {}

    # -- recording: what a demonstration stores per frame ---------------------------------------------------
    def recording_features(self) -> dict[str, tuple[str, tuple[int, ...], tuple[str, ...] | None]]:
        """{feature: (dtype, shape, names)} of `recording_frame` (LeRobot feature names), cameras excluded."""
        joints = tuple(self.robot.joint_names)
        return {
            "observation.state": ("float32", (len(joints),), joints),
            "observation.ee_pos": ("float32", (3,), ("x", "y", "z")),
            "observation.environment_state": ("float32", (10,), ("block_x", "block_y", "block_z", "block_qw",
                                                                   "block_qx", "block_qy", "block_qz", "goal_x",
                                                                   "goal_y", "goal_z")),
            "action": ("float32", (self.num_actions,), self.action_names()),
        }

    def recording_terms(self) -> dict[str, list[tuple[str, int]]]:
        """The deploy runtime's observation terms (`robolearn.deploy.observations.TERMS`) that make up each
        recorded feature, in order: what a policy learned from demonstrations observes on a robot. The goal is the
        runtime's command (`target_pos`)."""
        return {"observation.state": [("joint_pos_abs", len(self.robot.joint_names))],
                "observation.ee_pos": [("ee_pos", 3)],
                "observation.environment_state": [("object_pose", 7), ("target_pos", 3)]}

    def goal_ranges(self) -> dict[str, tuple[float, float]]:
        """{target_x, target_y, target_z: (low, high)}: where goals are drawn (the deployed command's range)."""
        raise NotImplementedError

    def ee_action(self) -> dict[str, object] | None:
        """The end-effector action mapping (the bundle's `action.ee`, see `robolearn.deploy.bundle.EeActionSpec`)
        with `scale` (m per action unit), or None for joint actions."""
        c = self.cfg
        if c.action_space == "joint":
            return None
        names = list(self.robot.joint_names)
        return {"scale": float(c.max_ee_step), "arm_joints": [names[i] for i in self._arm],
                "workspace_low": [float(x) for x in c.workspace_low],
                "workspace_high": [float(x) for x in c.workspace_high],
                "orientation": [float(x) for x in self._ee_quat], "ik_damping": float(c.ik_damping),
                "ik_iterations": int(c.ik_iterations), "gripper_joints": [names[i] for i in self._fingers],
                "gripper_open": float(c.finger_open)}

    def recording_frames(self) -> dict[str, torch.Tensor]:
        """The observation part of the current frame of every env (before its action), {feature: [N, d]} matching
        `recording_features`: what a demonstration stores, and what a policy learned from one reads."""
        return {
            "observation.state": self.joint_pos.float(),
            "observation.ee_pos": self.ee_pos.float(),
            "observation.environment_state": torch.cat([self.block_pos, self.block_quat, self.goal], dim=1).float(),
        }

    def recording_frame(self, env: int) -> dict[str, np.ndarray]:
        """`recording_frames` of env `env`, as numpy arrays (the recorder's frame)."""
        return {k: v[env].cpu().numpy() for k, v in self.recording_frames().items()}

    def scene(self, env: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(joint_pos [1, nu], block pose [1, 7], goal [1, 3]) of env `env` now, for `restart`."""
        return (self.joint_pos[env : env + 1].clone(), torch.cat([self.block_pos, self.block_quat], 1)[env : env + 1],
                self.goal[env : env + 1].clone())

    def scene_from_frame(self, frame: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(joint_pos [1, nu], block pose [1, 7], goal [1, 3]) from a recorded first frame, for `restart`."""
        env_state = torch.tensor(np.asarray(frame["observation.environment_state"]), dtype=torch.float32)
        q = torch.tensor(np.asarray(frame["observation.state"]), dtype=torch.float32)
        pose = env_state[:7].clone()
        pose[3:7] /= pose[3:7].norm()
        return q.unsqueeze(0), pose.unsqueeze(0), env_state[7:10].unsqueeze(0)

    def mocap_positions(self, env: int) -> dict[str, np.ndarray]:
        return {"goal": self.goal[env].numpy()}


@dataclass(kw_only=True)
class PushCfg(ManipulationCfg):
    goal_x: Range = (0.4, 0.65)
    goal_y: Range = (-0.2, 0.2)
    goal_min_distance: float = 0.1  # m from the block's start
    success_distance: float = 0.03  # m, block center to goal in the plane
    rewards: dict[str, float] = field(default_factory=lambda: {"reach": 0.5, "push": 2.0, "success": 2.0})


class PushTask(ManipulationTask):
    """Push the block (gripper closed, as a flat pusher) until its center is within `success_distance` of the goal."""

    cfg_cls = PushCfg
    cfg: PushCfg

    def sample_goal(self, block: torch.Tensor) -> torch.Tensor:
        c, g, k = self.cfg, self.generator, len(block)
        goal = torch.zeros(k, 3)
        goal[:, 0] = sample_uniform(*c.goal_x, (k,), g)
        goal[:, 1] = sample_uniform(*c.goal_y, (k,), g)
        for _ in range(20):  # redraw goals too close to the block
            near = (goal[:, :2] - block[:, :2]).norm(dim=1) < c.goal_min_distance
            if not near.any():
                break
            m = int(near.sum())
            goal[near, 0] = sample_uniform(*c.goal_x, (m,), g)
            goal[near, 1] = sample_uniform(*c.goal_y, (m,), g)
        return goal

    def goal_ranges(self) -> dict[str, tuple[float, float]]:
        return {"target_x": tuple(self.cfg.goal_x), "target_y": tuple(self.cfg.goal_y), "target_z": (0.0, 0.0)}

    def goal_distance(self) -> torch.Tensor:
        return (self.block_pos[:, :2] - self.goal[:, :2]).norm(dim=1)

    def success(self) -> torch.Tensor:
        return self.goal_distance() < self.cfg.success_distance

    def metrics(self) -> dict[str, torch.Tensor]:
        return {**super().metrics(), "goal_distance": self.goal_distance()}

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        return {**super().episode_metrics(), "final_goal_distance": self.goal_distance()}

    def _reward_reach(self) -> torch.Tensor:
        return 1.0 - torch.tanh((self.ee_pos - self.block_pos).norm(dim=1) / 0.1)

    def _reward_push(self) -> torch.Tensor:
        return 1.0 - torch.tanh(self.goal_distance() / 0.1)

    def _reward_success(self) -> torch.Tensor:
        return self.success().float()


@dataclass(kw_only=True)
class LiftCfg(ManipulationCfg):
    lift_height: float = 0.1  # m, block bottom above the table for success
    block_yaw: Range = (-0.5, 0.5)
    rewards: dict[str, float] = field(default_factory=lambda: {"reach": 0.5, "lift": 2.0, "success": 2.0})


class LiftTask(ManipulationTask):
    """Grasp the block and hold it `lift_height` above the table; the goal marker shows the lift height."""

    cfg_cls = LiftCfg
    cfg: LiftCfg

    def sample_goal(self, block: torch.Tensor) -> torch.Tensor:
        goal = block[:, :3].clone()
        goal[:, 2] = self.cfg.block_size + self.cfg.lift_height
        return goal

    def goal_ranges(self) -> dict[str, tuple[float, float]]:
        z = self.cfg.block_size + self.cfg.lift_height
        return {"target_x": tuple(self.cfg.block_x), "target_y": tuple(self.cfg.block_y), "target_z": (z, z)}

    def lift(self) -> torch.Tensor:
        return self.block_pos[:, 2] - self.cfg.block_size

    def success(self) -> torch.Tensor:
        return self.lift() > self.cfg.lift_height

    def metrics(self) -> dict[str, torch.Tensor]:
        return {**super().metrics(), "lift_height": self.lift()}

    def _reward_reach(self) -> torch.Tensor:
        return 1.0 - torch.tanh((self.ee_pos - self.block_pos).norm(dim=1) / 0.1)

    def _reward_lift(self) -> torch.Tensor:
        return (self.lift() / self.cfg.lift_height).clamp(0.0, 1.0)

    def _reward_success(self) -> torch.Tensor:
        return self.success().float()
