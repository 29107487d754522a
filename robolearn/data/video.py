"""Episode videos: h264 (libx264, yuv420p) encoding in a worker thread, decoding by timestamp, the info.json block.

The encoder runs next to the recorder on a small machine, so `VideoEncoder.put` only queues a copy of the frame; PyAV
releases the GIL while libx264 works. `tune=zerolatency` keeps no frames buffered in the encoder, so finishing an
episode only writes the mp4 index. GOP 2 (LeRobot's default `g=2`) keeps timestamp-based seeking cheap.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from robolearn.errors import DatasetError

__all__ = ["VIDEO_CODEC", "VIDEO_ENCODER", "VIDEO_PIX_FMT", "VIDEO_GOP", "EncodedVideo", "VideoEncoder",
           "video_info_block", "probe_video", "decode_video"]

VIDEO_CODEC = "h264"  # info.json video.codec (FFmpeg's canonical codec name, as LeRobot's get_video_info reports)
VIDEO_ENCODER = "libx264"
VIDEO_PIX_FMT = "yuv420p"
VIDEO_GOP = 2
_OPTIONS = {"g": str(VIDEO_GOP), "crf": "23", "preset": "veryfast", "tune": "zerolatency"}
_STOP, _ABORT = object(), object()

logging.getLogger("libav").setLevel(logging.ERROR)


def video_info_block(height: int, width: int, fps: int) -> dict[str, Any]:
    """The `info` block of a video feature in info.json (keys of LeRobot's video_utils.get_video_info)."""
    return {
        "video.height": int(height),
        "video.width": int(width),
        "video.codec": VIDEO_CODEC,
        "video.pix_fmt": VIDEO_PIX_FMT,
        "video.is_depth_map": False,
        "video.fps": int(fps),
        "video.channels": 3,
        "has_audio": False,
    }


@dataclass
class EncodedVideo:
    """A finished episode video: the mp4, its frame count and the colour histogram of its source frames."""

    path: Path
    frames: int
    histogram: np.ndarray  # [3, 256] int64: per-channel counts of the uint8 source pixel values (downsampled)
    sampled_frames: int  # frames that went into `histogram` (LeRobot's image stats `count`)


class VideoEncoder:
    """Encodes uint8 RGB frames [H, W, 3] into an h264 mp4 at `path` in a background thread.

    put(frame) queues the frame and returns; finish() waits for the encoder and closes the file; abort() stops it and
    deletes the file. An encoder failure is raised as DatasetError by the next put() or finish().
    """

    def __init__(self, path: str | Path, *, height: int, width: int, fps: int) -> None:
        self.path = Path(path)
        self.height, self.width, self.fps = int(height), int(width), int(fps)
        self.frames = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._histogram = np.zeros(3 * 256, dtype=np.int64)
        self._sampled = 0
        # LeRobot's auto_downsample_height_width: images of 300 px or more are strided to ~150 px for stats
        longest = max(self.height, self.width)
        self._stride = max(1, longest // 150) if longest >= 300 else 1
        self._thread = threading.Thread(target=self._run, name=f"video-encoder:{self.path.name}", daemon=True)
        self._thread.start()

    def put(self, frame: np.ndarray) -> None:
        """Queue one frame (the caller's array is copied); never waits on encoding."""
        if self._error is not None:
            raise DatasetError(f"{self.path}: video encoding failed: {self._error}")
        self._queue.put(np.array(frame, dtype=np.uint8, copy=True))
        self.frames += 1

    def finish(self) -> EncodedVideo:
        """Encode what is queued, close the mp4 and return it."""
        self._queue.put(_STOP)
        self._thread.join()
        if self._error is not None:
            raise DatasetError(f"{self.path}: video encoding failed: {self._error}")
        hist = self._histogram.reshape(3, 256)
        return EncodedVideo(self.path, self.frames, hist, self._sampled)

    def abort(self) -> None:
        """Stop encoding and delete the partial file."""
        if self._thread.is_alive():
            self._queue.put(_ABORT)
            self._thread.join()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        container = None
        try:
            container = av.open(str(self.path), "w")
            stream = container.add_stream(VIDEO_ENCODER, rate=self.fps, options=dict(_OPTIONS))
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, VIDEO_PIX_FMT
            time_base = Fraction(1, self.fps)
            offsets = np.array([0, 256, 512], dtype=np.int64)
            index = 0
            while True:
                item = self._queue.get()
                if item is _ABORT:
                    return
                if item is _STOP:
                    break
                small = item[:: self._stride, :: self._stride]
                self._histogram += np.bincount((small + offsets).ravel(), minlength=768)
                self._sampled += 1
                frame = av.VideoFrame.from_ndarray(item, format="rgb24")
                frame.pts, frame.time_base = index, time_base
                index += 1
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        except BaseException as exc:  # reported to the caller by put()/finish()
            self._error = exc
            while True:  # drop the queued frames (memory) up to the caller's finish/abort
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP or item is _ABORT:  # identity: `in` would compare frames (arrays) with ==
                    break
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception as exc:  # noqa: BLE001
                    self._error = self._error or exc


def probe_video(path: str | Path) -> dict[str, Any]:
    """Codec, size, pixel format and frame rate of the first video stream of `path` (DatasetError if unreadable)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path}: no video stream")
            stream = container.streams.video[0]
            return {"codec": stream.codec_context.codec.canonical_name if stream.codec_context.codec else None,
                    "width": stream.width, "height": stream.height, "pix_fmt": stream.pix_fmt,
                    "fps": float(stream.base_rate) if stream.base_rate else None,
                    "has_audio": bool(container.streams.audio)}
    except av.FFmpegError as exc:
        raise DatasetError(f"{path}: not a readable video ({exc})") from None


def decode_video(path: str | Path, start: float = 0.0, end: float | None = None,
                 tolerance: float = 1e-4) -> np.ndarray:
    """Decoded RGB frames [T, H, W, 3] uint8 whose timestamps lie in [start, end) (seconds, +- tolerance).

    `start`/`end` are an episode's videos/<key>/from_timestamp and to_timestamp: a file may hold several episodes.
    """
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if start > tolerance and stream.time_base:
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else len(frames) / float(stream.base_rate or 1)
                if t < start - tolerance:
                    continue
                if end is not None and t >= end - tolerance:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
    except av.FFmpegError as exc:
        raise DatasetError(f"{path}: video does not decode ({exc})") from None
    if not frames:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.stack(frames)
