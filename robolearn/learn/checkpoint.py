"""Checkpoint files and loading a trained policy from a run folder (play, eval, export, resume, distillation).

A checkpoint is a dict: `format` (the algorithm's: `robolearn-ppo`, `robolearn-ppo-lag`, `robolearn-student`,
`robolearn-diffusion`),
`version`, `task`, `obs_dims`, `num_actions`, `joint_names`, `config` (the run's resolved config), `iteration`,
`env_steps`, `train_time_s`, and the algorithm's state (`model`, ...). A run folder's checkpoint is its latest:
`checkpoints/model.pt`, or, in a run stopped before writing it, the `model_<N>.pt` with the largest N.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robolearn.config import from_dict
from robolearn.errors import CheckpointError
from robolearn.learn.config import TrainCfg
from robolearn.learn.models.actor_critic import build_policy
from robolearn.learn.models.students import load_student

__all__ = ["CHECKPOINT_VERSION", "CHECKPOINT_FORMATS", "PPO_FORMATS", "checkpoint_file", "load_checkpoint",
           "load_policy", "run_folder"]

CHECKPOINT_VERSION = 1
# train [--algo ppo-lag]; distill; train --algo diffusion
CHECKPOINT_FORMATS = ("robolearn-ppo", "robolearn-ppo-lag", "robolearn-student", "robolearn-diffusion",
                      "robolearn-dsrl")
PPO_FORMATS = ("robolearn-ppo", "robolearn-ppo-lag")  # an actor-critic trained by `robolearn train`
_NUMBERED = re.compile(r"model_(\d+)\.pt")


def checkpoint_file(path: str | Path, checkpoint: int | None = None) -> Path:
    """The file to read for `path`: a checkpoint file as given; for a run folder, `model_<checkpoint>.pt` when a
    number is given, else its latest (model.pt, or the highest model_<N>.pt)."""
    path = Path(path)
    if path.is_file():
        if checkpoint is not None:
            raise CheckpointError(f"{path}: --checkpoint picks a file in a run folder; give the run folder")
        return path
    folder = path / "checkpoints"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    numbered = sorted((int(m.group(1)), f) for f in folder.glob("model_*.pt") if (m := _NUMBERED.fullmatch(f.name)))
    if checkpoint is not None:
        want = folder / f"model_{checkpoint}.pt"
        if not want.is_file():
            have = ", ".join(str(n) for n, _ in numbered) or "none"
            raise CheckpointError(f"checkpoint not found: {want} (iterations saved in {folder}: {have})")
        return want
    if (folder / "model.pt").is_file():
        return folder / "model.pt"
    if numbered:
        return numbered[-1][1]
    raise CheckpointError(f"checkpoint not found: {path} has no checkpoints/model.pt or model_<N>.pt")


def load_checkpoint(path: str | Path, *, task: str | None = None, checkpoint: int | None = None,
                    with_path: bool = False) -> Any:
    """Read a checkpoint (a file, or a run folder's latest or `checkpoint`-th); a missing, unreadable or other-task
    file raises CheckpointError naming it. With `with_path`, returns (checkpoint, file)."""
    file = checkpoint_file(path, checkpoint)
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{file}: not a readable robolearn checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in CHECKPOINT_FORMATS:
        raise CheckpointError(f"{file}: not a robolearn checkpoint (PPO run, distilled student or diffusion run)")
    if task is not None and ckpt["task"] != task:
        raise CheckpointError(f"{file}: checkpoint was trained on task {ckpt['task']!r}, not {task!r}")
    return (ckpt, file) if with_path else ckpt


def load_policy(run: str | Path, *, task: str | None = None, checkpoint: int | None = None
                ) -> tuple[TrainCfg, nn.Module, dict[str, Any]]:
    """(training config, policy with the checkpoint's weights on the CPU, the checkpoint) of a run folder or file.

    For a distilled student the training config is its teacher's (task, overrides, evaluation settings)."""
    ckpt, file = load_checkpoint(run, task=task, checkpoint=checkpoint, with_path=True)
    if ckpt["format"] in ("robolearn-diffusion", "robolearn-dsrl"):
        raise CheckpointError(f"{file}: a diffusion policy (robolearn train --algo diffusion, or its DSRL finetune): "
                              "`robolearn eval` runs it in simulation; play, export, distillation and risk fitting "
                              "take PPO runs and students")
    if ckpt["format"] == "robolearn-student":
        cfg, student = load_student(ckpt, str(file))
        return cfg, student, ckpt
    cfg = from_dict(TrainCfg, ckpt["config"], where=f"{file} (checkpoint config)")
    policy = build_policy(cfg.network, ckpt["obs_dims"], ckpt["num_actions"], cfg.task)
    try:
        policy.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise CheckpointError(f"{file}: network weights do not match the config's network section") from None
    return cfg, policy, ckpt


def run_folder(run: str | Path) -> Path:
    """The run folder of `run` (a run folder, or runs/<name>/checkpoints/<file>)."""
    run = Path(run)
    return run if run.is_dir() else run.parent.parent
