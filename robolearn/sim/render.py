"""Offscreen rendering of one env of a task to an mp4 (MUJOCO_GL=egl, no display needed)."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from robolearn.errors import RobolearnError
from robolearn.sim.tasks import Task

__all__ = ["VideoRecorder"]


class VideoRecorder:
    """Copies env `env_id`'s state into a render model (same joints, real meshes) and renders frames.

    Call it once per policy step (`on_step`); it keeps every k-th frame to reach `fps`.
    """

    def __init__(self, task: Task, path: str | Path, *, env_id: int = 0, width: int = 480, height: int = 360,
                 fps: int = 25) -> None:
        self.task, self.env_id, self.path = task, env_id, Path(path)
        self.model = task.build_model(render=True)
        self.data = mujoco.MjData(self.model)
        try:
            self.renderer = mujoco.Renderer(self.model, height=height, width=width)
        except Exception as exc:  # no EGL / OSMesa
            raise RobolearnError(f"offscreen rendering failed ({exc}); try MUJOCO_GL=egl or MUJOCO_GL=osmesa") from None
        self.every = max(1, round(1.0 / (fps * task.dt)))
        self.fps = 1.0 / (self.every * task.dt)
        self.frames: list[np.ndarray] = []
        self._count = 0
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        floating = task.robot.floating_base
        self.camera.distance = 1.6 if floating else 1.8
        self.camera.azimuth = 135.0
        self.camera.elevation = -20.0
        self._target_id = next((i for i in range(self.model.nbody) if self.model.body(i).name == "target"), None)
        self.scene_option = mujoco.MjvOption()
        self.scene_option.geomgroup[:] = [1, 1, 1, 0, 0, 0]  # meshes, not the collision primitives

    def __call__(self, task: Task) -> None:
        self._count += 1
        if self._count % self.every:
            return
        env = self.env_id
        self.data.qpos[:] = task.sim.qpos[env].numpy()
        self.data.qvel[:] = task.sim.qvel[env].numpy()
        if self._target_id is not None and hasattr(task, "target"):
            self.data.mocap_pos[self.model.body_mocapid[self._target_id]] = task.target[env].numpy()
        mujoco.mj_forward(self.model, self.data)
        if task.robot.floating_base:
            self.camera.lookat[:] = self.data.qpos[:3]
            self.camera.lookat[2] = 0.25
        else:
            self.camera.lookat[:] = [0.3, 0.0, 0.35]
        self.renderer.update_scene(self.data, camera=self.camera, scene_option=self.scene_option)
        self.frames.append(self.renderer.render().copy())

    def close(self) -> Path:
        import imageio.v2 as imageio

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with imageio.get_writer(self.path, fps=self.fps, codec="libx264", quality=7, macro_block_size=8) as w:
            for frame in self.frames:
                w.append_data(frame)
        self.renderer.close()
        return self.path
