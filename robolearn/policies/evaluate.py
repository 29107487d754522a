"""Run a policy for one episode per env and aggregate task metrics (shared by train, play and eval)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from robolearn.config import merge
from robolearn.policies.history import PolicyInput
from robolearn.policies.networks import ActorCritic
from robolearn.policies.train_cfg import TrainCfg
from robolearn.sim.tasks import Task, make_task

__all__ = ["EpisodeResult", "evaluate", "evaluate_final"]

_ENDED_KEYS = ("env_ids", "terminated", "length_s")


@dataclass
class EpisodeResult:
    env_id: int
    length_s: float
    survived: bool
    episode_return: float
    metrics: dict[str, float] = field(default_factory=dict)


@torch.inference_mode()
def evaluate(policy: ActorCritic, task: Task, *, on_step: Callable[[Task], None] | None = None
             ) -> tuple[dict[str, float], list[EpisodeResult]]:
    """Deterministic (mean) actions; each env's first episode counts. Students with a history (`policy.history`
    > 1) read stacked frames, refilled at each reset as on the robot. Step metrics that a task marks NaN
    (e.g. while a new velocity command settles) are left out of the averages.

    Returns (summary, episodes): summary holds `survival`, `mean_return` and the mean of every metric.
    """
    policy.eval()
    obs = task.reset()
    n = task.num_envs
    policy_input = PolicyInput(policy, n)
    x = policy_input(obs)
    active = torch.ones(n, dtype=torch.bool)
    returns = torch.zeros(n)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    episodes: dict[int, EpisodeResult] = {}
    for _ in range(task.max_episode_steps):
        obs, reward, terminated, truncated, info = task.step(policy.act_mean(x))
        x = policy_input(obs, terminated | truncated)
        returns += reward * active
        for key, value in info["metrics"].items():
            valid = active & torch.isfinite(value)
            sums[key] = sums.get(key, torch.zeros(n)) + torch.where(valid, value, 0.0)
            counts[key] = counts.get(key, torch.zeros(n)) + valid
        if on_step is not None:
            on_step(task)
        ended = info.get("ended")
        if ended is not None:
            for row, env in enumerate(ended["env_ids"].tolist()):
                if not active[env]:
                    continue
                active[env] = False
                metrics = {k: (sums[k][env] / counts[k][env].clamp(min=1)).item() for k in sums}
                metrics.update({k: v[row].item() for k, v in ended.items() if k not in _ENDED_KEYS})
                episodes[env] = EpisodeResult(
                    env_id=env, length_s=ended["length_s"][row].item(), survived=not bool(ended["terminated"][row]),
                    episode_return=returns[env].item(), metrics=metrics,
                )
        if not active.any():
            break
    ordered = [episodes[i] for i in sorted(episodes)]
    summary = {
        "episodes": float(len(ordered)),
        "survival": sum(e.survived for e in ordered) / max(1, len(ordered)),
        "mean_return": sum(e.episode_return for e in ordered) / max(1, len(ordered)),
    }
    for key in sums:  # mean over all valid env-steps
        summary[key] = (sums[key].sum() / counts[key].sum().clamp(min=1)).item()
    for key in ordered[0].metrics if ordered else []:
        if key not in sums:
            summary[key] = sum(e.metrics[key] for e in ordered) / len(ordered)
    policy.train()
    return summary, ordered


def evaluate_final(policy: torch.nn.Module, cfg: TrainCfg, extra_overrides: dict | None = None) -> dict[str, float]:
    """A run's closing evaluation (summary.json): `cfg.eval.num_envs` episodes with the eval settings, seed
    cfg.seed + 1000, rounded to 4 digits."""
    task = make_task(cfg.task, cfg.eval.num_envs, backend=cfg.backend, seed=cfg.seed + 1000,
                     overrides=merge(cfg.eval_task_overrides(), extra_overrides or {}))
    try:
        summary, _ = evaluate(policy, task)
    finally:
        task.close()
    return {k: round(v, 4) for k, v in summary.items()}
