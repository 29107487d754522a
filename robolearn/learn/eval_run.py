"""Evaluate a run folder (PPO policy, teacher or distilled student) in batches: `robolearn eval` and `compare`.

`evaluate_run` runs `episodes` episodes (one per env, `num_envs` at a time, batch b seeded seed + b) with the
run's evaluation settings and a named randomization (`train`: the training ranges; others from the config's
`eval.randomization`, e.g. `wide`), and returns the report `robolearn eval` writes to JSON. The summary holds
`mean_return_ci95` and `survival_ci95` (from 2 episodes on): 1.96 standard errors of the per-episode mean (normal
approximation).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robolearn.errors import RobolearnError
from robolearn.learn.checkpoint import load_policy
from robolearn.learn.evaluate import EpisodeResult, evaluate
from robolearn.sim.tasks import Task, make_task

__all__ = ["ci95", "evaluate_run"]


def ci95(values: list[float]) -> float:
    """Half-width of the normal-approximation 95% confidence interval of the mean of `values` (NaN below 2)."""
    return 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def evaluate_run(run: str | Path, *, backend: str = "mujoco", episodes: int | None = None,
                 num_envs: int | None = None, seed: int | None = None, randomization: str = "train",
                 task: str | None = None, on_first_batch: Callable[[Task], Callable | None] | None = None,
                 device: str = "cpu", checkpoint: int | None = None) -> tuple[dict[str, Any], list[EpisodeResult]]:
    """(report, per-episode results) of the run's latest checkpoint (or model_<checkpoint>.pt).
    `on_first_batch(task)` may return a per-step callback (a video recorder) for the first batch."""
    cfg, policy, ckpt = load_policy(run, task=task, checkpoint=checkpoint)
    episodes = episodes if episodes is not None else cfg.eval.num_envs
    num_envs = min(num_envs if num_envs is not None else episodes, episodes)
    if episodes < 1 or num_envs < 1:
        raise RobolearnError(f"--episodes and --num-envs must be >= 1, got {episodes} and {num_envs}")
    seed = cfg.seed + 1000 if seed is None else seed
    overrides = cfg.eval_task_overrides(randomization)
    start = time.perf_counter()
    summaries, results = [], []
    for batch, first in enumerate(range(0, episodes, num_envs)):
        env = make_task(cfg.task, min(num_envs, episodes - first), backend=backend, device=device,
                        seed=seed + batch, overrides=overrides)
        try:
            on_step = on_first_batch(env) if on_first_batch is not None and batch == 0 else None
            summary, batch_results = evaluate(policy, env, on_step=on_step)
        finally:
            env.close()
        for r in batch_results:
            r.env_id += first  # episode number across batches
        summaries.append((summary, len(batch_results)))
        results += batch_results
    # Batches weigh by their episodes (one batch: evaluate's own summary, per-step metrics over env-steps).
    summary = {k: sum(s[k] * n for s, n in summaries) / len(results) for k in summaries[0][0]}
    summary["episodes"] = float(len(results))
    if len(results) > 1:  # no interval from one episode (and no NaN in the JSON)
        summary["mean_return_ci95"] = ci95([r.episode_return for r in results])
        summary["survival_ci95"] = ci95([float(r.survived) for r in results])
    kind = ckpt["config"]["student"]["kind"] if ckpt["format"] == "robolearn-student" else (
        "teacher" if policy.reads_privileged else "ppo")
    report = {"run": str(run), "task": cfg.task, "policy": kind, "history": policy.history, "backend": backend,
              "device": device,
              "randomization": randomization, "episodes": len(results), "num_envs": num_envs, "seed": seed,
              "task_overrides": overrides, "wall_time_s": round(time.perf_counter() - start, 2),
              "summary": summary, "per_episode": [dataclasses.asdict(r) for r in results]}
    return report, results
