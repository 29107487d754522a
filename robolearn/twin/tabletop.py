"""The arm twin with a tabletop task's objects: rehearse a policy that observes an object (a diffusion policy
for panda-push) through the deploy runtime, as on the real arm with a tracked object.

`TabletopTwin` is a `SimRobot` whose scene holds the task's block and goal marker (`add_tabletop_objects`, the
same bodies and contact settings the task trains with). `object_pose()` is the runtime's object pose source
(`DeployRuntime(objects=...)`): the block's pose in the base frame with the time it was measured, the role that
motion capture or a fiducial tracker plays on a real robot. `place()` starts an episode: a block pose and a goal.
`camera(name)` starts the task's camera rendered from the twin's state in its own process (`twin/camera.py`), the
source an image policy reads on the twin.
"""

from __future__ import annotations

import time

import mujoco
import numpy as np
import torch

from robolearn.errors import ConfigError
from robolearn.sim.tasks import load_task_cfg
from robolearn.sim.tasks.manipulation import ManipulationCfg, add_tabletop_objects
from robolearn.twin.camera import TwinCamera
from robolearn.twin.sim_robot import SimRobot

__all__ = ["TabletopTwin", "sample_scenes", "sample_scene"]


def sample_scenes(task: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(block poses [count, 7], goals [count, 3]) as the task's resets draw them (its ranges and seed)."""
    from robolearn.sim.tasks import make_task

    sim = make_task(task, count, seed=seed)
    try:
        sim.reset()
        return (torch.cat([sim.block_pos, sim.block_quat], dim=1).double().numpy(), sim.goal.double().numpy())
    finally:
        sim.close()


def sample_scene(task: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    block, goal = sample_scenes(task, 1, seed)
    return block[0], goal[0]


class TabletopTwin(SimRobot):
    """The robot of tabletop task `task` with its block and goal, driven like hardware (see `SimRobot`)."""

    def __init__(self, task: str, control_dt: float, *, joint_names: list[str] | None = None,
                 lockstep: bool = True) -> None:
        _, cfg = load_task_cfg(task)
        if not isinstance(cfg, ManipulationCfg):
            raise ConfigError(f"task {task}: not a tabletop manipulation task (panda-push, panda-lift)")
        self.task_cfg = cfg
        self.cameras: dict[str, TwinCamera] = {}  # before the settling steps of SimRobot.__init__ (advance)
        super().__init__(cfg.robot, control_dt, joint_names=joint_names, lockstep=lockstep,
                         scene=lambda spec: add_tabletop_objects(spec, cfg))
        self._block_qpos = int(self.model.joint("block").qposadr[0])
        self._block_qvel = int(self.model.joint("block").dofadr[0])
        self._goal_mocap = int(self.model.body("goal").mocapid[0])
        self.task = task

    @classmethod
    def from_profile(cls, profile, task: str, *, seed: int = 0) -> TabletopTwin:
        """The twin of a hardware profile's arm with task `task`'s objects, placed as the task's episode `seed`
        starts (block pose and goal from the task's own reset)."""
        twin = cls(task, 1.0 / profile.control_hz, joint_names=profile.joint_names)
        block, goal = sample_scene(task, seed)
        twin.place(block, goal)
        return twin

    def camera(self, name: str, *, fps: float = 30.0) -> TwinCamera:
        """Camera `name` of the task, rendered in its own process from this twin's state (started here, first
        frame awaited); closed with the twin (`close`)."""
        if name not in self.cameras:
            cam = TwinCamera(self.task, name, self.model.nq, fps=fps)
            self.cameras[name] = cam
            self._publish()
            cam.wait_first_frame()
        return self.cameras[name]

    def _publish(self) -> None:
        for cam in self.cameras.values():
            cam.publish(self.data.qpos, self.goal)

    def advance(self) -> None:
        super().advance()
        if self.cameras:
            self._publish()

    def close(self) -> None:
        for cam in self.cameras.values():
            cam.close()
        self.cameras.clear()
        super().close()

    def place(self, block_pose: np.ndarray, goal: np.ndarray) -> None:
        """Put the block at `block_pose` (x, y, z, qw, qx, qy, qz), at rest, and the goal marker at `goal` [3]."""
        d = self.data
        pose = np.asarray(block_pose, dtype=float)
        pose[3:] /= np.linalg.norm(pose[3:])
        d.qpos[self._block_qpos : self._block_qpos + 7] = pose
        d.qvel[self._block_qvel : self._block_qvel + 6] = 0.0
        d.mocap_pos[self._goal_mocap] = np.asarray(goal, dtype=float)
        mujoco.mj_forward(self.model, d)
        self._publish()

    def object_pose(self) -> tuple[np.ndarray, float]:
        """(the block's pose [7] in the base frame, the time it was read): the runtime's object pose source."""
        return self.data.qpos[self._block_qpos : self._block_qpos + 7].copy(), time.monotonic()

    @property
    def goal(self) -> np.ndarray:
        return self.data.mocap_pos[self._goal_mocap].copy()

    def goal_distance(self) -> float:
        """The block's center to the goal in the table plane, m (panda-push succeeds below success_distance)."""
        return float(np.linalg.norm(self.data.qpos[self._block_qpos : self._block_qpos + 2] - self.goal[:2]))
