"""Closed-loop evaluation of a diffusion policy in simulation: `robolearn eval RUN` on a diffusion run, and the
closing evaluation of `robolearn train --algo diffusion`.

One episode per env, all envs of a batch in lockstep: every `execute` steps the `ChunkPlanner` plans a chunk for all
of them at once from the last `obs_horizon` frames of the dataset's observation (the task's `recording_frames`,
the features `obs_keys` side by side, exactly what the demonstrations recorded). An episode succeeds when the task's
`success()` holds at any step before it ends (Diffusion Policy's protocol: the best state of the episode), and
`success_at_end` counts those still succeeding on their last step. Success rates come with 95% Wilson intervals.

Timing: `ms_per_chunk` is one env's plan alone (batch 1, the deploy runtime's case: the denoiser in onnxruntime,
median of repeated plans with the evaluated sampler, warm plans for `warm`), `ms_per_chunk_torch` the same in torch,
and `ms_per_chunk_batched` the batch's plan time per env (torch).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from robolearn.errors import ConfigError
from robolearn.learn.demonstrations import obs_key_columns
from robolearn.learn.diffusion import ChunkPlanner, DiffusionModel, OnnxDenoiser
from robolearn.learn.eval_run import wilson95
from robolearn.sim.tasks import Task, make_task

__all__ = ["observation_frames", "recorded_columns", "CameraFrames", "evaluate_diffusion", "chunk_latency_ms"]


def recorded_columns(task: Task, obs_keys: Sequence[str]) -> list[tuple[str, list[int] | None]]:
    """(feature, its columns or None for all) of each key in `obs_keys`, by the task's recorded column names
    (`obs_key_columns`; a task that records nothing has no column names)."""
    features = task.recording_features() if hasattr(task, "recording_features") else {}
    names = {k: v[2] for k, v in features.items()}
    return [obs_key_columns(key, names.get(key.partition("[")[0]), f"task {task.name}") for key in obs_keys]


def observation_frames(task: Task, obs_keys: Sequence[str]) -> torch.Tensor:
    """[N, O]: the features `obs_keys` of the task's current recording frame, side by side (float32)."""
    frames_fn = getattr(task, "recording_frames", None)
    if frames_fn is None:
        raise ConfigError(f"task {task.name}: it records no demonstration frames (recording_frames), so a policy "
                          "learned from demonstrations cannot observe it; use a manipulation task (panda-push, ...)")
    frames = frames_fn()
    parts = []
    for feature, cols in recorded_columns(task, obs_keys):
        if feature not in frames:
            raise ConfigError(f"task {task.name}: no observation {feature!r} in its recording frames "
                              f"({', '.join(frames)}); the policy was trained on {list(obs_keys)}")
        x = frames[feature].reshape(task.num_envs, -1)
        parts.append(x if cols is None else x[:, cols])
    return torch.cat(parts, dim=1).float()


class CameraFrames:
    """The task's cameras named by an image policy's video features (`observation.images.<camera>`), rendered for
    every env and resized as in training: `__call__()` -> [N, K, 3, H, W] uint8. One offscreen render per env and
    camera (~5 ms at 240 x 320 with software EGL)."""

    def __init__(self, task: Task, image_keys: Sequence[str], size: Sequence[int]) -> None:
        from robolearn.sim.render import CameraRig

        cameras = {c.name for c in getattr(task.cfg, "cameras", [])}
        self.names = [key.rsplit(".", 1)[-1] for key in image_keys]
        missing = [k for k, n in zip(image_keys, self.names, strict=True) if n not in cameras]
        if missing:
            raise ConfigError(f"task {task.name}: no camera for {missing[0]!r} (its cameras: "
                              f"{', '.join(sorted(cameras)) or 'none'}); the policy was trained on {list(image_keys)}")
        self.task, self.size = task, size
        self.rig = CameraRig(task)

    def __call__(self) -> torch.Tensor:
        from robolearn.learn.models.image_encoder import resize_frames

        per_env = []
        for env in range(self.task.num_envs):
            rendered = self.rig.frames(self.task, env)
            per_env.append(resize_frames(np.stack([rendered[n] for n in self.names]), self.size))
        return torch.stack(per_env)

    def close(self) -> None:
        self.rig.close()


@torch.inference_mode()
def chunk_latency_ms(model: DiffusionModel, sampler: str, *, repeats: int = 30,
                     denoiser: torch.nn.Module | None = None) -> float:
    """Median ms of one env's plan (batch 1) with `sampler` (and `denoiser`, e.g. an OnnxDenoiser); warm plans
    follow a cold one as when deployed."""
    frames = torch.zeros(1, model.cfg.obs_horizon, model.obs_dim)
    images = None
    if model.cameras:  # the encoder runs once per plan: part of its time
        images = torch.zeros(1, model.cfg.obs_horizon, model.cameras, 3, *model.cfg.image_size, dtype=torch.uint8)
    planner = ChunkPlanner(model, 1, sampler=sampler, generator=torch.Generator().manual_seed(0), denoiser=denoiser)
    for _ in range(3):
        planner.plan(frames, images)
    times = []
    for _ in range(repeats if sampler != "ddpm" else max(3, repeats // 10)):
        t0 = time.perf_counter()
        planner.plan(frames, images)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@torch.inference_mode()
def _run_batch(model: DiffusionModel, task: Task, obs_keys: Sequence[str], sampler: str, seed: int,
               on_step: Callable[[Task], None] | None, steer: torch.nn.Module | None = None,
               cameras: CameraFrames | None = None) -> tuple[list[dict[str, Any]], list[float]]:
    cfg, n = model.cfg, task.num_envs
    task.reset()
    planner = ChunkPlanner(model, n, sampler=sampler, generator=torch.Generator().manual_seed(seed), steer=steer)
    frames = observation_frames(task, obs_keys).unsqueeze(1).repeat(1, cfg.obs_horizon, 1)
    images = None if cameras is None else cameras().unsqueeze(1).repeat(1, cfg.obs_horizon, 1, 1, 1, 1)
    running = torch.ones(n, dtype=torch.bool)
    reached = torch.zeros(n, dtype=torch.bool)
    at_end = torch.zeros(n, dtype=torch.bool)
    returns = torch.zeros(n)
    length = torch.zeros(n)
    fell = torch.zeros(n, dtype=torch.bool)
    plan_ms: list[float] = []
    chunk, k = None, cfg.execute
    for _ in range(task.max_episode_steps):
        if k == cfg.execute:
            t0 = time.perf_counter()
            chunk = planner.plan(frames, images)
            plan_ms.append((time.perf_counter() - t0) * 1e3 / n)
            k = 0
        _, reward, _, terminated, truncated, info = task.step(chunk[:, k])
        k += 1
        # an env whose episode ended this step was reset: its last state's success is in info["ended"]
        last = info["ended"]
        success = torch.where(last["mask"], last["success"].bool(), task.success())
        reached |= running & success
        returns += reward * running
        length += running
        ended = running & last["mask"]
        at_end = torch.where(ended, success, at_end)
        fell |= ended & last["terminated"]
        running &= ~ended
        if on_step is not None:
            on_step(task)
        if not running.any():
            break
        frames = torch.cat((frames[:, 1:], observation_frames(task, obs_keys).unsqueeze(1)), dim=1)
        if cameras is not None:
            images = torch.cat((images[:, 1:], cameras().unsqueeze(1)), dim=1)
    at_end = torch.where(running, task.success(), at_end)  # envs still running when the step limit came
    task.check()
    episodes = [{"env_id": i, "success": bool(reached[i]), "success_at_end": bool(at_end[i]),
                 "terminated": bool(fell[i]), "length_s": round(float(length[i]) * task.dt, 3),
                 "return": round(float(returns[i]), 4)} for i in range(n)]
    return episodes, plan_ms


def evaluate_diffusion(model: DiffusionModel, task_name: str, obs_keys: Sequence[str], *, episodes: int,
                       image_keys: Sequence[str] = (),
                       seed: int, sampler: str | None = None, num_envs: int | None = None, backend: str = "mujoco",
                       device: str = "cpu", overrides: dict[str, Any] | None = None,
                       on_first_batch: Callable[[Task], Callable[[Task], None] | None] | None = None,
                       onnx_latency: bool = True, steer: torch.nn.Module | None = None
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, per-episode results) of `episodes` closed-loop episodes, `num_envs` (default all) at a time,
    batch b seeded seed + b. `on_first_batch(task)` may return a per-step callback (a video recorder).
    `onnx_latency` adds `ms_per_chunk` in onnxruntime (the deploy engine); exporting the denoiser for it takes
    5-6 s, so the quick evaluation at the end of training reports only the torch latency. `steer` (a DSRL actor:
    condition -> noise) picks each plan's initial noise."""
    sampler = sampler or model.cfg.sampler
    num_envs = min(num_envs or episodes, episodes)
    if episodes < 1 or num_envs < 1:
        raise ConfigError(f"episodes and num_envs must be >= 1, got {episodes} and {num_envs}")
    model = model.eval()
    results: list[dict[str, Any]] = []
    plan_ms: list[float] = []
    start = time.perf_counter()
    for batch, first in enumerate(range(0, episodes, num_envs)):
        task = make_task(task_name, min(num_envs, episodes - first), backend=backend, device=device,
                         seed=seed + batch, overrides=overrides or {})
        cameras = None
        try:
            if model.cameras:
                cameras = CameraFrames(task, image_keys, model.cfg.image_size)
            on_step = on_first_batch(task) if on_first_batch is not None and batch == 0 else None
            batch_results, batch_ms = _run_batch(model, task, obs_keys, sampler, seed + batch, on_step, steer,
                                                 cameras)
        finally:
            if cameras is not None:
                cameras.close()
            task.close()
        for r in batch_results:
            r["env_id"] += first
        results += batch_results
        plan_ms += batch_ms
    n = len(results)
    ok = sum(r["success"] for r in results)
    ok_end = sum(r["success_at_end"] for r in results)
    low, high = wilson95(ok, n)
    low_end, high_end = wilson95(ok_end, n)
    summary = {
        "episodes": n, "sampler": sampler, "execute": model.cfg.execute,
        "denoising_steps": {"ddim": model.cfg.inference_steps, "ddpm": model.cfg.train_steps,
                            "warm": model.cfg.warm_steps}[sampler],
        **({"warm_schedule_steps": model.cfg.warm_schedule_steps or model.cfg.inference_steps}
           if sampler == "warm" else {}),
        "success": ok / n, "success_ci95": [round(low, 4), round(high, 4)],
        "success_at_end": ok_end / n, "success_at_end_ci95": [round(low_end, 4), round(high_end, 4)],
        "terminated": sum(r["terminated"] for r in results) / n,
        "mean_return": round(sum(r["return"] for r in results) / n, 4),
        "mean_length_s": round(sum(r["length_s"] for r in results) / n, 3),
        "ms_per_chunk_torch": round(chunk_latency_ms(model, sampler), 2),
        "ms_per_chunk_batched": round(statistics.median(plan_ms), 3),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    if onnx_latency:
        summary["ms_per_chunk"] = round(chunk_latency_ms(model, sampler, denoiser=OnnxDenoiser(model)), 2)
    return summary, results
