"""Offscreen rendering of one env of a task (MUJOCO_GL=egl, no display needed): a chase-camera mp4 of a rollout
(`VideoRecorder`), and a task's own cameras as frames for datasets (`CameraRig`)."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from robolearn.errors import RobolearnError
from robolearn.sim.tasks import Task

__all__ = ["VideoRecorder", "CameraRig", "write_mp4", "offscreen_renderer", "mesh_option"]


def offscreen_renderer(model: mujoco.MjModel, height: int, width: int, camera: str | None = None
                       ) -> mujoco.Renderer:
    """An offscreen renderer for `camera` (None: the free camera), warmed up: a renderer's first frame from a camera
    is lit differently from all that follow (3.3 grey levels per pixel on average with panda-push's camera, 0.5 with
    panda-lift's; warming up with another camera leaves 2.2), so it renders one from that camera and discards it:
    every frame a policy sees or a dataset stores then looks like every other."""
    try:
        renderer = mujoco.Renderer(model, height=height, width=width)
    except Exception as exc:  # no EGL / OSMesa
        raise RobolearnError(f"offscreen rendering failed ({exc}); try MUJOCO_GL=egl or MUJOCO_GL=osmesa") from None
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    renderer.update_scene(data, camera=-1 if camera is None else camera, scene_option=mesh_option())
    renderer.render()
    return renderer


def mesh_option() -> mujoco.MjvOption:
    option = mujoco.MjvOption()
    option.geomgroup[:] = [1, 1, 1, 0, 0, 0]  # meshes, not the collision primitives
    return option


def _load_env(task: Task, model: mujoco.MjModel, data: mujoco.MjData, env: int) -> None:
    """Copy env `env`'s state, its markers (mocap bodies) and moved geoms into a render model, then forward."""
    data.qpos[:] = task.sim.qpos[env].cpu().numpy()
    data.qvel[:] = task.sim.qvel[env].cpu().numpy()
    for body, pos in task.mocap_positions(env).items():
        mocap = model.body_mocapid[model.body(body).id]
        data.mocap_pos[mocap] = pos
    for geom, pos in task.geom_positions(env).items():
        model.geom_pos[model.geom(geom).id] = pos
    mujoco.mj_forward(model, data)


class VideoRecorder:
    """Copies env `env_id`'s state into a render model (same joints, real meshes) and renders frames.

    Call it once per policy step (`on_step`); it keeps every k-th frame to reach `fps`.
    """

    def __init__(self, task: Task, path: str | Path, *, env_id: int = 0, width: int = 480, height: int = 360,
                 fps: int = 25) -> None:
        self.task, self.env_id, self.path = task, env_id, Path(path)
        self.model = task.build_model(render=True)
        self.data = mujoco.MjData(self.model)
        self.renderer = offscreen_renderer(self.model, height, width)
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
        self.scene_option = mesh_option()
        self.fixed_view = task.video_view()
        if self.fixed_view is not None:
            for key in ("distance", "azimuth", "elevation"):
                setattr(self.camera, key, self.fixed_view[key])

    def __call__(self, task: Task) -> None:
        self._count += 1
        if self._count % self.every:
            return
        _load_env(task, self.model, self.data, self.env_id)
        if self.fixed_view is not None:
            self.camera.lookat[:] = self.fixed_view["lookat"]
        elif task.robot.floating_base:
            self.camera.lookat[:] = self.data.qpos[:3]
            self.camera.lookat[2] = 0.25
        else:
            self.camera.lookat[:] = [0.3, 0.0, 0.35]
        self.renderer.update_scene(self.data, camera=self.camera, scene_option=self.scene_option)
        self.frames.append(self.renderer.render().copy())

    def close(self) -> Path:
        write_mp4(self.path, self.frames, self.fps)
        self.renderer.close()
        return self.path


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: float) -> Path:
    """Write RGB frames as an mp4: h264 through imageio's FFmpeg, or MPEG-4 (mp4v) through OpenCV where
    imageio-ffmpeg is not installed (a GPU machine that carries only what training needs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import imageio_ffmpeg  # noqa: F401 - imageio's FFmpeg writer needs it
    except ImportError:
        _write_mp4v(path, frames, fps)
    else:
        import imageio.v2 as imageio

        with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=8) as w:
            for frame in frames:
                w.append_data(frame)
    return path


def _write_mp4v(path: Path, frames: list[np.ndarray], fps: float) -> None:
    try:
        import cv2
    except ImportError:
        raise RobolearnError("writing an mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg) or OpenCV") from None
    if not frames:
        raise RobolearnError(f"{path}: no frames were rendered")
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


class CameraRig:
    """The cameras a task declares (`cfg.cameras`: name, pose, size), rendered for one env with the real meshes.

    `frames(task, env)` returns {camera name: uint8 [H, W, 3]}; ~5 ms per 240x320 frame with software EGL."""

    def __init__(self, task: Task) -> None:
        cameras = list(getattr(task.cfg, "cameras", []))
        if not cameras:
            raise RobolearnError(f"task {task.name} declares no cameras")
        self.model = task.build_model(render=True)
        self.data = mujoco.MjData(self.model)
        self.cameras = {c.name: c for c in cameras}
        self.renderers = {c.name: offscreen_renderer(self.model, c.height, c.width, c.name) for c in cameras}
        self.option = mesh_option()

    def frames(self, task: Task, env: int = 0) -> dict[str, np.ndarray]:
        _load_env(task, self.model, self.data, env)
        out = {}
        for name, renderer in self.renderers.items():
            renderer.update_scene(self.data, camera=name, scene_option=self.option)
            out[name] = renderer.render()  # a fresh array per call
        return out

    def close(self) -> None:
        for renderer in self.renderers.values():
            renderer.close()
