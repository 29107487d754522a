"""The twin's camera: a tabletop task's camera rendered in a separate process, so that an image policy rehearses on
the twin as on a robot with a USB camera, and rendering never holds the control process's GIL (a MuJoCo render in
the control process stalls its 480 Hz loop for milliseconds).

The twin publishes its state (qpos, the goal marker) into shared memory after every physics step (`publish`); the
render process reads the newest state at the camera's frame rate, renders the task's camera with the task's own
render model (real meshes, as the demonstrations were recorded), and writes the frame and its capture time
(`time.monotonic()`, one clock for both processes on Linux) into shared memory. `read()` returns the newest frame,
like `robolearn.teleop.camera.OpenCVCamera`, and raises `RobolearnError` when the render process is gone or stalled
(the deploy runtime damps on it).
Both buffers use a sequence counter (odd while a write is in progress) so a reader never sees a torn state or frame.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing import shared_memory

import numpy as np

from robolearn.errors import RobolearnError

__all__ = ["TwinCamera"]

_HEADER = 2  # float64 slots before the payload: sequence counter, stamp


class _Shared:
    """A float64 or uint8 payload in shared memory behind a [sequence, stamp] float64 header."""

    def __init__(self, name: str | None, size: int, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        nbytes = _HEADER * 8 + size * np.dtype(dtype).itemsize
        self.shm = shared_memory.SharedMemory(name=name, create=name is None, size=nbytes)
        self.header = np.ndarray((_HEADER,), np.float64, self.shm.buf[: _HEADER * 8])
        self.payload = np.ndarray(shape, dtype, self.shm.buf[_HEADER * 8:nbytes])
        if name is None:
            self.header[:] = 0.0

    def write(self, value: np.ndarray, stamp: float) -> None:
        self.header[0] += 1.0  # odd: writing
        self.payload[...] = value
        self.header[1] = stamp
        self.header[0] += 1.0

    def read(self) -> tuple[np.ndarray, float, float] | None:
        """(payload copy, stamp, sequence), or None while nothing was written; retries a torn read."""
        for _ in range(100):
            seq = self.header[0]
            if seq == 0.0:
                return None
            if seq % 2:
                continue
            value, stamp = self.payload.copy(), float(self.header[1])
            if self.header[0] == seq:
                return value, stamp, seq
        return None

    def close(self, unlink: bool) -> None:
        del self.header, self.payload
        self.shm.close()
        if unlink:
            self.shm.unlink()


def _render_loop(task: str, camera: str, state_name: str, frame_name: str, nq: int, height: int, width: int,
                 fps: float, stop: mp.Event) -> None:  # runs in the render process
    import os

    import mujoco

    os.nice(10)  # the simulated camera yields the CPU to the control loop it stands beside (a real camera has its own)

    from robolearn.sim.render import mesh_option, offscreen_renderer
    from robolearn.sim.tasks import make_task

    sim = make_task(task, 1)
    model = sim.build_model(render=True)
    sim.close()
    data = mujoco.MjData(model)
    renderer = offscreen_renderer(model, height, width, camera)  # as CameraRig renders the demonstrations
    option = mesh_option()  # meshes, not the collision primitives
    goal = int(model.body("goal").mocapid[0])
    state = _Shared(state_name, nq + 3, np.float64, (nq + 3,))
    frames = _Shared(frame_name, height * width * 3, np.uint8, (height, width, 3))
    period = 1.0 / fps
    next_t = time.monotonic()
    try:
        while not stop.is_set():
            latest = state.read()
            if latest is not None:
                values = latest[0]
                data.qpos[:] = values[:nq]
                data.mocap_pos[goal] = values[nq:]
                mujoco.mj_forward(model, data)
                renderer.update_scene(data, camera=camera, scene_option=option)
                image = renderer.render()
                frames.write(image, time.monotonic())
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
    finally:
        renderer.close()
        state.close(unlink=False)
        frames.close(unlink=False)


class TwinCamera:
    """Camera `camera` of tabletop task `task` on the twin, rendered at `fps` in a render process from the state
    the twin publishes (`publish(qpos, goal)`); `read() -> (RGB frame [H, W, 3] uint8, capture time)`."""

    def __init__(self, task: str, camera: str, nq: int, *, fps: float = 30.0, start_timeout_s: float = 30.0) -> None:
        from robolearn.sim.tasks import load_task_cfg

        _, cfg = load_task_cfg(task)
        spec = next((c for c in getattr(cfg, "cameras", []) if c.name == camera), None)
        if spec is None:
            names = [c.name for c in getattr(cfg, "cameras", [])]
            raise RobolearnError(f"task {task}: no camera {camera!r} to render on the twin (its cameras: "
                                 f"{', '.join(names) or 'none'})")
        self.name, self.nq, self.fps = camera, nq, fps
        self.max_age_s = max(0.5, 3.0 / fps)
        self.height, self.width = spec.height, spec.width
        self._state = _Shared(None, nq + 3, np.float64, (nq + 3,))
        self._frames = _Shared(None, spec.height * spec.width * 3, np.uint8, (spec.height, spec.width, 3))
        ctx = mp.get_context("spawn")  # a fresh interpreter: no MuJoCo/EGL state inherited from this one
        self._stop = ctx.Event()
        self._process = ctx.Process(target=_render_loop, name=f"twin-camera-{camera}", daemon=True,
                                    args=(task, camera, self._state.shm.name, self._frames.shm.name, nq,
                                          spec.height, spec.width, fps, self._stop))
        self._process.start()
        self._start_timeout_s = start_timeout_s
        self._started = False

    def publish(self, qpos: np.ndarray, goal: np.ndarray) -> None:
        """The twin's state after a physics step (the full qpos, the goal marker's position)."""
        self._state.write(np.concatenate([qpos, goal]), time.monotonic())

    def wait_first_frame(self) -> None:
        """Block until the render process delivered a frame (it builds the render model first: seconds)."""
        t0 = time.monotonic()
        while self._frames.read() is None:
            if not self._process.is_alive():
                raise RobolearnError(f"twin camera {self.name}: the render process exited (code "
                                     f"{self._process.exitcode}); is offscreen rendering available (MUJOCO_GL=egl)?")
            if time.monotonic() - t0 > self._start_timeout_s:
                raise RobolearnError(f"twin camera {self.name}: no frame within {self._start_timeout_s:g} s")
            time.sleep(0.01)
        self._started = True

    def read(self) -> tuple[np.ndarray, float]:
        latest = self._frames.read()
        if latest is None or not self._process.is_alive():
            raise RobolearnError(f"twin camera {self.name}: the render process is not delivering frames")
        frame, stamp, _ = latest
        age = time.monotonic() - stamp
        if age > self.max_age_s:
            raise RobolearnError(f"twin camera {self.name}: no new frame for {age:.2f} s (limit {self.max_age_s:g} s)")
        return frame, stamp

    def close(self) -> None:
        self._stop.set()
        self._process.join(timeout=5.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=2.0)
        self._state.close(unlink=True)
        self._frames.close(unlink=True)
