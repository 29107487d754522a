"""`robolearn train TASK --algo diffusion --dataset D`: Diffusion Policy as an offline algorithm of the shared Runner.

The config is `policies/diffusion/<task>.yaml` (`DiffusionTrainCfg`; `--set diffusion.batch_size=128` etc. on the
command line). An iteration is `steps_per_iteration` gradient steps on windows of the dataset's episodes; the Runner
logs `loss/denoise` per iteration (TensorBoard x = iterations), saves checkpoints (format `robolearn-diffusion`),
resumes (`--resume RUN`: weights, EMA, optimizer, schedule and sampler generator, so a resumed run continues
exactly), stops cleanly on Ctrl-C, and closes with a closed-loop evaluation in simulation (diffusion_eval.py) in
summary.json. `robolearn eval RUN` evaluates a saved run again (any sampler: ddim, ddpm, warm).

The cosine learning-rate decay spans `diffusion.total_steps` gradient steps (0: the run's budget,
max_iterations x steps_per_iteration); a resume past it trains on at the final rate (0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from robolearn.config import declarations_root, from_dict, load_yaml, merge, to_dict
from robolearn.errors import CheckpointError, ConfigError
from robolearn.learn.algorithm import Algorithm
from robolearn.learn.diffusion import ChunkWindows, DiffusionCfg, DiffusionLearner, DiffusionModel, MinMaxNormalizer
from robolearn.learn.runner import Runner, RunnerCfg
from robolearn.sim.backends import check_device

__all__ = ["DiffusionEvalCfg", "DiffusionTrainCfg", "load_diffusion_cfg", "DiffusionAlgorithm", "evaluate_run",
           "make_diffusion_runner", "load_diffusion"]

DIFFUSION_FORMAT = "robolearn-diffusion"


@dataclass(kw_only=True)
class DiffusionEvalCfg:
    episodes: int = 100  # closed-loop episodes of the closing evaluation (and `robolearn eval`'s default)
    num_envs: int = 100  # envs stepped together
    task_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.num_envs < 1:
            raise ConfigError(f"eval.episodes and eval.num_envs must be >= 1, got {self.episodes} and "
                              f"{self.num_envs}")


@dataclass(kw_only=True)
class DiffusionTrainCfg:
    task: str
    algorithm: str = "diffusion"
    dataset: str = ""  # a robolearn/LeRobot v3 dataset folder (robolearn record ...); `--dataset` sets it
    obs_keys: list[str] = field(default_factory=lambda: ["observation.state"])  # features, side by side
    image_keys: list[str] = field(default_factory=list)  # camera (video) features: an image-based policy
    action_key: str = "action"
    max_episodes: int = 0  # train on the first N episodes (0: all)
    backend: str = "mujoco"  # of the closing evaluation
    device: str = "cpu"
    steps_per_iteration: int = 50  # gradient steps per Runner iteration (one log line, one progress tick)
    max_iterations: int = 200
    max_time_s: float = 0.0
    save_interval: int = 20
    seed: int = 0
    torch_threads: int = 0  # 0: torch's default
    task_overrides: dict[str, Any] = field(default_factory=dict)
    diffusion: DiffusionCfg = field(default_factory=DiffusionCfg)
    eval: DiffusionEvalCfg = field(default_factory=DiffusionEvalCfg)

    def __post_init__(self) -> None:
        if self.algorithm != "diffusion":
            raise ConfigError(f"algorithm: a diffusion config has algorithm: diffusion, got {self.algorithm!r}")
        for name in ("steps_per_iteration", "max_iterations", "save_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_episodes < 0 or not self.max_time_s >= 0 or self.torch_threads < 0:
            raise ConfigError(f"max_episodes, max_time_s and torch_threads must be >= 0, got {self.max_episodes}, "
                              f"{self.max_time_s}, {self.torch_threads}")
        if not self.obs_keys:
            raise ConfigError("obs_keys: name at least one observation feature of the dataset")
        check_device(self.backend, self.device)
        if self.diffusion.total_steps == 0:
            self.diffusion.total_steps = self.max_iterations * self.steps_per_iteration


def load_diffusion_cfg(task: str, path: str | Path | None = None,
                       overrides: dict[str, Any] | None = None) -> DiffusionTrainCfg:
    """policies/diffusion/<task>.yaml (or the file `path`; none for the task: the defaults) with `overrides` on
    top. The dataset must be named (the file or --dataset)."""
    if path is None:
        path = declarations_root() / "policies" / "diffusion" / f"{task}.yaml"
        if not path.is_file():
            from robolearn.sim.tasks import task_names

            if task not in task_names():
                raise ConfigError(f"unknown task {task!r}; valid tasks: {', '.join(task_names())}")
        data = load_yaml(path) if path.is_file() else {}
    else:
        data = load_yaml(path)
    data = merge(data, overrides or {})
    if data.setdefault("task", task) != task:
        raise ConfigError(f"{path}: config is for task {data['task']!r}, not {task!r}")
    data.setdefault("algorithm", "diffusion")
    cfg = from_dict(DiffusionTrainCfg, data, where=str(path))
    if not cfg.dataset:
        raise ConfigError("diffusion trains from demonstrations: give the dataset with --dataset PATH (a folder "
                          "written by `robolearn record`/`teleop`, or any LeRobot v3 dataset)")
    return cfg


class DiffusionAlgorithm(Algorithm):
    """Offline: each `update` takes `steps_per_iteration` gradient steps (DiffusionLearner); `deployable()` is the
    EMA model."""

    checkpoint_format = DIFFUSION_FORMAT
    collects = False
    progress_metric = ("loss", "loss/denoise")

    def __init__(self, learner: DiffusionLearner, steps_per_iteration: int, *, demos: int, frames: int) -> None:
        self.learner, self.steps_per_iteration = learner, steps_per_iteration
        self.demos, self.frames = demos, frames

    def act(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise RuntimeError("DiffusionAlgorithm is offline: it learns from a dataset, not from acting")

    def process_env_step(self, obs: dict[str, torch.Tensor], reward: torch.Tensor, cost: torch.Tensor,
                         terminated: torch.Tensor, truncated: torch.Tensor, info: dict[str, Any]) -> None:
        raise RuntimeError("DiffusionAlgorithm is offline: it stores no transitions")

    def update(self) -> dict[str, float]:
        losses = torch.stack([self.learner.step() for _ in range(self.steps_per_iteration)])
        return {"loss/denoise": float(losses.mean()), "train/learning_rate": self.learner.learning_rate,
                "train/gradient_steps": float(self.learner.steps)}

    def state_dict(self) -> dict[str, Any]:
        model = self.learner.model
        return {"dims": {"obs": model.obs_dim, "action": model.action_dim}, **self.learner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.learner.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"diffusion checkpoint does not match this model ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0]})") from None

    def deployable(self) -> DiffusionModel:
        return self.learner.ema_model

    def summary(self, stats: dict[str, float]) -> dict[str, Any]:
        return {"gradient_steps": self.learner.steps, "demos": self.demos, "frames": self.frames,
                "final_losses": {k: v for k, v in stats.items() if k.startswith("loss/")}}


def _build_model(cfg: DiffusionTrainCfg, obs_dim: int, action_dim: int, obs_norm: MinMaxNormalizer | None = None,
                 action_norm: MinMaxNormalizer | None = None) -> DiffusionModel:
    """The model; without normalizers, placeholders of the right size (a checkpoint's buffers replace them)."""
    obs_norm = obs_norm or MinMaxNormalizer(np.zeros(obs_dim), np.ones(obs_dim), name="observation")
    action_norm = action_norm or MinMaxNormalizer(np.zeros(action_dim), np.ones(action_dim), name="action")
    return DiffusionModel(cfg.diffusion, obs_dim, action_dim, obs_norm, action_norm, cameras=len(cfg.image_keys))


def evaluate_run(model: DiffusionModel, cfg: DiffusionTrainCfg, **settings: Any
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`evaluate_diffusion` with the run's own evaluation: its task and features, `eval.episodes` and `num_envs`,
    the scenes of seed + 1000 (the closing evaluation's), its backend and task overrides, on the CPU; `settings`
    (any keyword of `evaluate_diffusion`) replace them."""
    from robolearn.learn.diffusion_eval import evaluate_diffusion

    run = {"image_keys": cfg.image_keys, "episodes": cfg.eval.episodes, "num_envs": cfg.eval.num_envs,
           "seed": cfg.seed + 1000, "backend": cfg.backend, "device": "cpu",
           "overrides": merge(cfg.task_overrides, cfg.eval.task_overrides)}
    return evaluate_diffusion(model, cfg.task, cfg.obs_keys, **{**run, **settings})


def _evaluate(model: DiffusionModel, cfg: DiffusionTrainCfg, device: str) -> dict[str, Any]:
    return evaluate_run(model, cfg, device=device, onnx_latency=False)[0]


def make_diffusion_runner(cfg: DiffusionTrainCfg, run_dir: str | Path, *, console: Console | None = None,
                          log_interval: int = 10) -> Runner:
    """Demonstrations (one-line errors for an unfit dataset), model, learner and the offline Runner."""
    from robolearn.learn.demonstrations import load_demonstrations
    from robolearn.sim.tasks import load_task_cfg

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    _, task_cfg = load_task_cfg(cfg.task, cfg.task_overrides)
    # a policy that acts in end-effector targets learns them from the recorded motions (task_overrides)
    ee_targets = task_cfg if getattr(task_cfg, "action_space", None) == "ee_target" else None
    demos = load_demonstrations(cfg.dataset, task=cfg.task, obs_keys=cfg.obs_keys, action_key=cfg.action_key,
                                max_episodes=cfg.max_episodes or None, image_keys=cfg.image_keys,
                                image_size=cfg.diffusion.image_size, ee_targets=ee_targets, console=console)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    with device:
        model = _build_model(cfg, demos.obs_dim, demos.action_dim, demos.obs_norm, demos.action_norm)
    windows = ChunkWindows(demos.episodes, cfg.diffusion.obs_horizon, cfg.diffusion.pred_horizon,
                           images=demos.images).to(device)
    learner = DiffusionLearner(model, windows, generator=torch.Generator(device).manual_seed(cfg.seed + 1))
    algorithm = DiffusionAlgorithm(learner, cfg.steps_per_iteration, demos=len(demos.episodes), frames=demos.frames)
    meta = {"task": cfg.task, "obs_dims": {"observation": demos.obs_dim}, "num_actions": demos.action_dim,
            "obs_keys": list(cfg.obs_keys), "image_keys": list(cfg.image_keys),
            "action_key": cfg.action_key, "dataset": str(cfg.dataset),
            "held_action_dims": demos.action_norm.constant_dims}
    settings = RunnerCfg(max_iterations=cfg.max_iterations, max_time_s=cfg.max_time_s,
                         save_interval=cfg.save_interval, log_interval=log_interval)
    return Runner(algorithm, None, settings, run_dir, config=to_dict(cfg), meta=meta, console=console,
                  evaluate=lambda m: _evaluate(m, cfg, str(device)))


def load_diffusion(ckpt: dict[str, Any], file: str | Path) -> tuple[DiffusionTrainCfg, DiffusionModel]:
    """(config, EMA model on the CPU) of a robolearn-diffusion checkpoint (read by load_checkpoint)."""
    cfg = from_dict(DiffusionTrainCfg, {**ckpt["config"], "device": "cpu"}, where=f"{file} (checkpoint config)")
    model = _build_model(cfg, ckpt["dims"]["obs"], ckpt["dims"]["action"])
    try:
        model.load_state_dict(ckpt["ema_model"])
    except (RuntimeError, KeyError):
        raise CheckpointError(f"{file}: diffusion weights do not match the config's diffusion section") from None
    return cfg, model.eval()
