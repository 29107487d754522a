"""Where a training run's scalars and videos go, and the periodic evaluation videos of `robolearn train --video`.

Loggers (`make_loggers`): TensorBoard always writes `<run>/tb`; `--logger wandb` adds Weights & Biases (the
`wandb` extra: pip install "robolearn[wandb]"; imported only when chosen). The W&B project is $WANDB_PROJECT
(default `robolearn`), the run name the run folder's; the W&B run id is kept in `<run>/wandb_run_id`, so that a
`--resume` goes on in the same W&B run. WANDB_MODE=offline writes `<run>/wandb/` without an account.

Videos (`TrainingVideo`): every `interval` iterations, `length` policy steps of the current policy (deterministic
actions) in one env of a separate task, built as the closing evaluation builds its own (the eval settings, seed
+ 1000, the training backend and device), rendered by `robolearn play`'s recorder into
`<run>/videos/iter_<N>.mp4`. Each clip starts from the same initial state (the task's generator is re-seeded), so
clips of different iterations compare. TensorBoard gets the clip as an animated GIF (half size; Images tab, no
moviepy needed) and its path as text; W&B gets the mp4.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robolearn.errors import RobolearnError

__all__ = ["LOGGERS", "WANDB_INSTALL", "Logger", "TensorBoardLogger", "WandbLogger", "Loggers", "check_logger",
           "make_loggers", "Clip", "TrainingVideo"]

LOGGERS = ("tensorboard", "wandb")
WANDB_INSTALL = 'pip install "robolearn[wandb]"'


class Logger:
    """One destination of a run's scalars (and videos). `step` is the x axis: env steps (iterations for an
    offline algorithm)."""

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_video(self, tag: str, clip: Clip, step: int) -> None:  # noqa: B027 - optional
        """A recorded clip (mp4 on disk, frames in memory)."""

    def flush(self) -> None:  # noqa: B027 - optional
        pass

    def close(self, *, failed: bool = False) -> None:  # noqa: B027 - optional
        pass


class TensorBoardLogger(Logger):
    """`<run>/tb`: scalars, and a clip as an animated GIF (an image summary, as SummaryWriter.add_video writes,
    encoded with Pillow instead of moviepy) beside its mp4 path as text."""

    def __init__(self, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def log_video(self, tag: str, clip: Clip, step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.writer.add_text(f"{tag}_path", str(clip.path), step)
        if not clip.frames:
            return
        gif, height, width = _gif(clip.frames, clip.fps)
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, *, failed: bool = False) -> None:
        self.writer.close()


def _gif(frames: list[np.ndarray], fps: float) -> tuple[bytes, int, int]:
    """An animated GIF of `frames` at half size (a 100-frame clip: ~0.5 MB, ~0.4 s to encode)."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f[::2, ::2])).quantize(colors=128,
                                                                           method=Image.Quantize.FASTOCTREE)
              for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000.0 / fps), loop=0)
    return buffer.getvalue(), images[0].height, images[0].width


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise RobolearnError(f"--logger wandb needs Weights & Biases: {WANDB_INSTALL}") from None
    return wandb


class WandbLogger(Logger):
    """A W&B run (wandb.init in the run folder); a resumed robolearn run goes on in the same W&B run."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any]) -> None:
        wandb = _import_wandb()
        self._wandb = wandb
        run_dir = Path(run_dir)
        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "robolearn"), name=run_dir.name,
                                  id=run_id, resume="allow" if run_id else None, dir=str(run_dir), config=config)
        except Exception as exc:  # not logged in, no network, ...: one line, not wandb's traceback
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RobolearnError(f"wandb.init failed: {first} (run `wandb login`, or set WANDB_MODE=offline)"
                                 ) from None
        id_file.write_text(self.run.id)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(dict(scalars), step=step)

    def log_video(self, tag: str, clip: Clip, step: int) -> None:
        self.run.log({tag: self._wandb.Video(str(clip.path), format="mp4")}, step=step)

    def close(self, *, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class Loggers(Logger):
    """Every chosen logger at once."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_scalars(scalars, step)

    def log_video(self, tag: str, clip: Clip, step: int) -> None:
        for logger in self.loggers:
            logger.log_video(tag, clip, step)

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def close(self, *, failed: bool = False) -> None:
        loggers, self.loggers = self.loggers, []  # once: a second close does nothing
        for logger in loggers:
            logger.close(failed=failed)


def check_logger(kind: str) -> None:
    """Refuse an unknown logger, or wandb where it is not installed (before any env is built)."""
    if kind not in LOGGERS:
        raise RobolearnError(f"unknown logger {kind!r}; valid loggers: {', '.join(LOGGERS)}")
    if kind == "wandb":
        _import_wandb()


def make_loggers(kind: str, run_dir: str | Path, config: dict[str, Any]) -> Loggers:
    """TensorBoard (`<run>/tb`), plus W&B for kind `wandb`."""
    check_logger(kind)
    loggers: list[Logger] = [TensorBoardLogger(Path(run_dir) / "tb")]
    if kind == "wandb":
        loggers.append(WandbLogger(run_dir, config))
    return Loggers(loggers)


# -- periodic evaluation videos ----------------------------------------------------------------------------------
@dataclass
class Clip:
    path: Path
    frames: list[np.ndarray]  # RGB uint8 [H, W, 3]
    fps: float
    seconds: float  # wall time of the recording (rollout, rendering, mp4)


class TrainingVideo:
    """Every `interval` iterations, a `length`-step clip of the current policy (see the module doc). Built on the
    process that writes the run (rank 0); the render context is checked here, before training starts."""

    def __init__(self, cfg: Any, *, device: str | torch.device | None = None, interval: int = 100,
                 length: int = 200) -> None:
        from robolearn.sim.render import VideoRecorder
        from robolearn.sim.tasks import make_task
        from robolearn.sim.tasks.gym_env import GYM_PREFIX

        if interval < 1 or length < 1:
            raise RobolearnError(f"--video-interval and --video-length must be >= 1, got {interval} and {length}")
        if cfg.task.startswith(GYM_PREFIX):
            raise RobolearnError(f"--video renders robolearn's MuJoCo tasks; {cfg.task} (a Gymnasium env) has no "
                                 "recorder here")
        self.interval, self.length = interval, length
        self.seed = cfg.seed + 1000  # as the closing evaluation
        self.task = make_task(cfg.task, 1, backend=cfg.backend, device=str(device or cfg.device), seed=self.seed,
                              overrides=cfg.eval_task_overrides())
        try:
            probe = VideoRecorder(self.task, "unused.mp4")  # no EGL/OSMesa: a one-line error now, not mid-run
            probe.renderer.close()
            if length < probe.every:
                raise RobolearnError(f"--video-length {length} is too short for one frame: the video keeps every "
                                     f"{probe.every}th step (>= {probe.every} steps)")
        except BaseException:
            self.close()
            raise

    def due(self, iteration: int) -> bool:
        return iteration % self.interval == 0

    def record(self, policy: torch.nn.Module, path: str | Path) -> Clip:
        """Roll `policy` out (deterministic actions, through episode ends) and write the mp4. The global RNGs and
        the policy's train/eval mode are left as they were."""
        from robolearn.learn.history import PolicyInput
        from robolearn.sim.render import VideoRecorder

        start = time.perf_counter()
        task = self.task
        dev = task.device
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
        was_training = policy.training
        recorder = VideoRecorder(task, path)
        try:
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                policy.eval()
                task.generator.manual_seed(self.seed)  # every clip starts from the same state
                obs = task.reset()
                policy_input = PolicyInput(policy, 1, dev)
                x = policy_input(obs)
                for _ in range(self.length):
                    obs, _, _, terminated, truncated, _ = task.step(policy.act_mean(x))
                    x = policy_input(obs, terminated | truncated)
                    recorder(task)
        except BaseException:
            recorder.renderer.close()
            raise
        finally:
            policy.train(was_training)
        written = recorder.close()
        return Clip(written, recorder.frames, recorder.fps, time.perf_counter() - start)

    def close(self) -> None:
        if self.task is not None:
            self.task.close()
            self.task = None
