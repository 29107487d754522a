"""`robolearn finetune RUN --method dsrl`: a DSRL run over a trained diffusion run, on the shared Runner.

The new run's checkpoints hold the SAC networks and, under `base`, the frozen diffusion model (config, sizes and EMA
weights), so a DSRL run evaluates without its base run's folder. The task is the base run's own (its evaluation
settings), and the closing evaluation is the diffusion evaluation with the actor choosing each plan's noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from robolearn.config import from_dict, merge, to_dict
from robolearn.errors import CheckpointError, ConfigError
from robolearn.learn.checkpoint import load_checkpoint
from robolearn.learn.diffusion import DiffusionModel
from robolearn.learn.dsrl import SAC, DSRLCfg, NoiseActor, NoiseSteeredTask, NoiseWindow
from robolearn.learn.runner import Runner, RunnerCfg

__all__ = ["DSRLEvalCfg", "DSRLTrainCfg", "load_dsrl_cfg", "make_dsrl_runner", "load_dsrl", "evaluate_dsrl"]


@dataclass
class DSRLEvalCfg:
    episodes: int = 100
    num_envs: int = 100


@dataclass
class DSRLTrainCfg:
    base: str = ""  # the diffusion run (its folder or a checkpoint file)
    algorithm: str = "dsrl"
    num_envs: int = 32
    steps_per_env: int = 4  # chunks per env per iteration
    max_iterations: int = 600
    max_time_s: float = 0.0
    save_interval: int = 50
    seed: int = 0
    device: str = "cpu"
    torch_threads: int = 0
    dsrl: DSRLCfg = field(default_factory=DSRLCfg)
    eval: DSRLEvalCfg = field(default_factory=DSRLEvalCfg)

    def __post_init__(self) -> None:
        if min(self.num_envs, self.steps_per_env, self.max_iterations, self.save_interval) < 1:
            raise ConfigError("num_envs, steps_per_env, max_iterations and save_interval must be >= 1")
        if self.eval.episodes < 1 or self.eval.num_envs < 1:
            raise ConfigError(f"eval.episodes and eval.num_envs must be >= 1, got {self.eval.episodes} and "
                              f"{self.eval.num_envs}")


def load_dsrl_cfg(base: str | Path, overrides: dict[str, Any] | None = None) -> DSRLTrainCfg:
    return from_dict(DSRLTrainCfg, merge({"base": str(base)}, overrides or {}), where="finetune --method dsrl")


def _base_model(ckpt: dict[str, Any], file: Any) -> tuple[Any, DiffusionModel]:
    from robolearn.learn.diffusion_run import load_diffusion

    if ckpt["format"] != "robolearn-diffusion":
        raise CheckpointError(f"{file}: DSRL steers a diffusion run (robolearn train --algo diffusion); this is a "
                              f"{ckpt['format']} checkpoint")
    dcfg, model = load_diffusion(ckpt, file)
    if model.cameras:
        raise CheckpointError(f"{file}: DSRL steers state-based diffusion policies; this one sees cameras "
                              f"({', '.join(dcfg.image_keys)})")
    return dcfg, model


def evaluate_dsrl(actor: NoiseActor, model: DiffusionModel, dcfg: Any, cfg: DSRLTrainCfg, device: str,
              episodes: int | None = None, num_envs: int | None = None, on_first_batch: Any = None
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from robolearn.learn.diffusion_run import evaluate_run

    steer = torch.nn.Sequential(actor.eval(), NoiseWindow.for_model(model, cfg.dsrl.steer))
    return evaluate_run(model, dcfg, episodes=episodes or cfg.eval.episodes, num_envs=num_envs or cfg.eval.num_envs,
                        sampler="ddim", device=device, on_first_batch=on_first_batch, onnx_latency=False,
                        steer=steer)


def make_dsrl_runner(cfg: DSRLTrainCfg, run_dir: str | Path, *, console: Console | None = None,
                     log_interval: int = 10) -> Runner:
    """The frozen base model, the noise-steered task, SAC and the Runner."""
    from robolearn.sim.tasks import make_task

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    ckpt, file = load_checkpoint(cfg.base, with_path=True)
    dcfg, model = _base_model(ckpt, file)
    device = torch.device(cfg.device)
    model = model.to(device)
    torch.manual_seed(cfg.seed)
    task = make_task(dcfg.task, cfg.num_envs, backend=dcfg.backend, device=str(device), seed=cfg.seed,
                     overrides=merge(dcfg.task_overrides, dcfg.eval.task_overrides))
    try:
        steered = NoiseSteeredTask(task, model, dcfg.obs_keys, NoiseWindow.for_model(model, cfg.dsrl.steer),
                                   reward=cfg.dsrl.reward)
        algorithm = SAC(cfg.dsrl, steered.num_obs, steered.num_actions, cfg.num_envs, device,
                        chunk_steps=model.cfg.execute)
    except BaseException:
        task.close()
        raise
    meta = {"task": dcfg.task, "obs_dims": {"policy": steered.num_obs}, "num_actions": steered.num_actions,
            "base": {"file": str(file), "config": ckpt["config"], "dims": ckpt["dims"], "steps": ckpt.get("steps", 0),
                     "ema_model": {k: v.cpu() for k, v in model.state_dict().items()}}}
    settings = RunnerCfg(steps_per_env=cfg.steps_per_env, max_iterations=cfg.max_iterations,
                         max_time_s=cfg.max_time_s, save_interval=cfg.save_interval, log_interval=log_interval)
    return Runner(algorithm, steered, settings, run_dir, config=to_dict(cfg), meta=meta, console=console,
                  evaluate=lambda actor: evaluate_dsrl(actor, model, dcfg, cfg, str(device))[0])


def load_dsrl(ckpt: dict[str, Any], file: str | Path) -> tuple[DSRLTrainCfg, Any, DiffusionModel, NoiseActor]:
    """(DSRL config, the base run's config, the frozen diffusion model, the actor) of a robolearn-dsrl checkpoint,
    on the CPU."""
    cfg = from_dict(DSRLTrainCfg, {**ckpt["config"], "device": "cpu"}, where=f"{file} (checkpoint config)")
    base = ckpt["base"]
    dcfg, model = _base_model({"format": "robolearn-diffusion", **base}, file)
    actor = NoiseActor(ckpt["obs_dims"]["policy"], ckpt["num_actions"], cfg.dsrl.hidden, cfg.dsrl.bound)
    try:
        actor.load_state_dict(ckpt["actor"])
    except (RuntimeError, KeyError):
        raise CheckpointError(f"{file}: the DSRL actor does not match the config's dsrl section") from None
    return cfg, dcfg, model, actor.eval()

