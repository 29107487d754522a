"""Real cameras for recording: `--camera opencv:<index | device path | video file>` through OpenCV (`cv2`,
`pip install robolearn[camera]`).

`OpenCVCamera` reads frames on a background thread (a slow or blocking driver never stalls the control loop) and
keeps the newest one with its capture time (`time.monotonic()`). The recorder asks for the newest frame at each
recorded row and stores the frame's age against the robot state of the same row (`observation.camera_age_s`), so
a dataset says how well image and state line up. A camera that cannot be opened, returns no frame, or stops
delivering (unplugged, or the end of a video file) raises `CameraError` naming the camera: recording stops with a
one-line error, and the arm is damped by the teleop session's own `finally`.

A video file stands in for a device (tests, replays of a recorded camera): its frames are paced at the file's frame
rate, and its end is a disconnect.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from robolearn.errors import RobolearnError

__all__ = ["CameraError", "CameraSpec", "parse_camera", "OpenCVCamera"]

PREFIX = "opencv:"


class CameraError(RobolearnError):
    """A camera that cannot be opened or stopped delivering frames."""


@dataclass(frozen=True)
class CameraSpec:
    source: int | str  # a device index (0), a device node (/dev/video2) or a video file
    width: int | None = None  # requested; the driver may deliver another size (read back, reported)
    height: int | None = None
    fps: float | None = None
    exposure: float | None = None  # driver units (CAP_PROP_EXPOSURE), where the driver allows it
    max_age_s: float = 0.5  # a newest frame older than this is a disconnected camera (see parse_camera)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.source}"


def parse_camera(text: str, *, size: str | None = None, fps: float | None = None, exposure: float | None = None
                 ) -> CameraSpec:
    """`opencv:0`, `opencv:/dev/video2`, `opencv:demo.mp4` (+ `size` as HxW, e.g. 240x320) -> CameraSpec; anything
    else is a one-line error naming the option."""
    if not text.startswith(PREFIX) or not text[len(PREFIX):]:
        raise CameraError(f"--camera {text!r}: expected opencv:<index, device path or video file>, e.g. opencv:0")
    raw = text[len(PREFIX):]
    source: int | str = int(raw) if raw.isdigit() else raw
    width = height = None
    if size is not None:
        parts = size.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise CameraError(f"--camera-size {size!r}: expected HEIGHTxWIDTH in pixels, e.g. 240x320")
        height, width = int(parts[0]), int(parts[1])
    if fps is not None and not fps > 0:
        raise CameraError(f"--camera-fps: expected frames per second > 0, got {fps:g}")
    # a frame older than 3 frame periods (at least 0.5 s) is a disconnected camera
    return CameraSpec(source, width, height, fps, exposure, max_age_s=max(0.5, 3.0 / fps) if fps else 0.5)


class OpenCVCamera:
    """The newest frame of an OpenCV capture, read on a daemon thread. `read() -> (rgb uint8 [H, W, 3], capture
    time)`; `shape` is (H, W) of the frames delivered (after the optional resize to the requested size)."""

    def __init__(self, spec: CameraSpec, *, open_timeout_s: float = 5.0) -> None:
        try:
            import cv2
        except ImportError:
            raise CameraError(f"--camera {spec.name}: OpenCV is not installed (pip install "
                              "'robolearn[camera]')") from None
        self.spec, self._cv2 = spec, cv2
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our one-line errors, not its warnings
        self._is_file = isinstance(spec.source, str) and not spec.source.startswith("/dev/")
        self.capture = cv2.VideoCapture(spec.source)
        if not self.capture.isOpened():
            what = "no such video file" if self._is_file else "no such device, or it is busy"
            raise CameraError(f"--camera {spec.name}: cannot open ({what})")
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, spec.width), (cv2.CAP_PROP_FRAME_HEIGHT, spec.height),
                            (cv2.CAP_PROP_FPS, spec.fps), (cv2.CAP_PROP_EXPOSURE, spec.exposure)):
            if value is not None and not self._is_file:
                self.capture.set(prop, float(value))  # drivers ignore what they cannot do; frames are resized below
        file_fps = self.capture.get(cv2.CAP_PROP_FPS) if self._is_file else 0.0
        self._period = 1.0 / file_fps if file_fps > 0 else 0.0
        self._lock = threading.Condition()
        self._frame: np.ndarray | None = None
        self._stamp = 0.0
        self._failure: str | None = None
        self._stop = threading.Event()
        self.frames = 0
        self._thread = threading.Thread(target=self._loop, name=f"camera {spec.name}", daemon=True)
        self._thread.start()
        with self._lock:
            self._lock.wait_for(lambda: self._frame is not None or self._failure is not None, timeout=open_timeout_s)
            first = self._frame
        if first is None:
            self.close()
            raise CameraError(f"--camera {spec.name}: opened, but no frame within {open_timeout_s:g} s")
        self.shape: tuple[int, int] = first.shape[:2]

    def _convert(self, bgr: np.ndarray) -> np.ndarray:
        cv2, spec = self._cv2, self.spec
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        if spec.width is not None and spec.height is not None and bgr.shape[:2] != (spec.height, spec.width):
            bgr = cv2.resize(bgr, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            ok, bgr = self.capture.read()
            stamp = time.monotonic()
            if not ok or bgr is None:
                with self._lock:
                    self._failure = "end of the video file" if self._is_file else "the device stopped delivering"
                    self._lock.notify_all()
                return
            image = self._convert(bgr)
            with self._lock:
                self._frame, self._stamp = image, stamp
                self.frames += 1
                self._lock.notify_all()
            if self._period:  # a file plays at its own rate, like a device
                next_t += self._period
                time.sleep(max(0.0, next_t - time.monotonic()))

    def read(self) -> tuple[np.ndarray, float]:
        """(newest frame, its capture time on time.monotonic()); CameraError when the camera is gone or stale."""
        with self._lock:
            frame, stamp, failure = self._frame, self._stamp, self._failure
        age = time.monotonic() - stamp
        if failure is not None:
            raise CameraError(f"--camera {self.spec.name}: disconnected ({failure}; last frame {age:.2f} s ago)")
        if frame is None or age > self.spec.max_age_s:
            raise CameraError(f"--camera {self.spec.name}: no new frame for {age:.2f} s (limit "
                              f"{self.spec.max_age_s:g} s): disconnected or stalled")
        return frame, stamp

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.capture.release()

    def __enter__(self) -> OpenCVCamera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
