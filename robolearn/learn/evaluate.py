"""Run a policy for one episode per env and aggregate task metrics (shared by train, play and eval)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from robolearn.config import merge
from robolearn.learn.config import TrainCfg
from robolearn.learn.hierarchical import make_policy_task
from robolearn.learn.history import PolicyInput
from robolearn.learn.models.actor_critic import ActorCritic
from robolearn.sim.tasks import Task

__all__ = ["EpisodeResult", "evaluate", "evaluate_final"]

@dataclass
class EpisodeResult:
    env_id: int
    length_s: float
    survived: bool
    episode_return: float
    metrics: dict[str, float] = field(default_factory=dict)
    episode_cost: float = 0.0  # the task's cost summed over the episode (0 without cost terms)
    violations: int = 0  # steps with a cost > 0 (a constraint violated)
    longest_violation: int = 0  # the longest run of consecutive violating steps


@torch.inference_mode()
def evaluate(policy: ActorCritic, task: Task, *, on_step: Callable[[Task], None] | None = None
             ) -> tuple[dict[str, float], list[EpisodeResult]]:
    """Deterministic (mean) actions; each env's first episode counts. Students with a history (`policy.history`
    > 1) read stacked frames, refilled at each reset as on the robot. Step metrics that a task marks NaN
    (e.g. while a new velocity command settles) are left out of the averages.

    Runs on the task's device (the policy is moved there and back); per-env results are kept there with `where`
    and read once at the end, so a GPU evaluation makes no host sync per step.

    Returns (summary, episodes): summary holds `survival`, `mean_return` and the mean of every metric.
    """
    policy.eval()
    home = next(policy.parameters()).device
    dev = task.device
    policy.to(dev)
    obs = task.reset()
    n = task.num_envs
    policy_input = PolicyInput(policy, n, dev)
    x = policy_input(obs)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    returns = torch.zeros(n, device=dev)
    costs = torch.zeros(n, device=dev)
    violations = torch.zeros(n, device=dev)
    run = torch.zeros(n, device=dev)  # the current run of violating steps
    longest = torch.zeros(n, device=dev)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}  # the ended-episode fields of each env's first episode
    for step in range(task.max_episode_steps):
        obs, reward, cost, terminated, truncated, info = task.step(policy.act_mean(x))
        x = policy_input(obs, terminated | truncated)
        returns += reward * active
        costs += cost * active
        violating = (cost > 0) & active
        violations += violating
        run = (run + 1) * violating
        longest = torch.maximum(longest, run)
        for key, value in info["metrics"].items():
            valid = active & torch.isfinite(value)
            sums[key] = sums.get(key, torch.zeros(n, device=dev)) + torch.where(valid, value, 0.0)
            counts[key] = counts.get(key, torch.zeros(n, device=dev)) + valid
        if on_step is not None:
            on_step(task)
        ended = info["ended"]
        now = active & ended["mask"]
        for key, value in ended.items():
            if key != "mask":
                first[key] = torch.where(now, value.float(), first.get(key, torch.zeros(n, device=dev)))
        active = active & ~ended["mask"]  # an ended env's return and metrics stop accumulating
        # An episode lasts at most max_episode_steps, so every env has ended when the loop is through; stopping
        # early needs `active.any()` on the host: every step on the CPU, every 64 steps on a GPU.
        if (dev.type == "cpu" or step % 64 == 63) and not active.any():
            break
    ended_keys = [k for k in first if k not in ("terminated", "length_s")]
    first.update({"return": returns, "cost": costs, "violations": violations, "longest_violation": longest})
    metric_means = {k: sums[k] / counts[k].clamp(min=1) for k in sums}
    host = {k: v.cpu() for k, v in {"done": ~active, **first, **{f"m:{k}": v for k, v in metric_means.items()}}.items()}
    summary_sums = {k: (sums[k].sum() / counts[k].sum().clamp(min=1)).item() for k in sums}
    task.check()
    policy.to(home)
    episodes = []
    for env in range(n):
        if not host["done"][env]:
            continue
        metrics = {k: float(host[f"m:{k}"][env]) for k in sums}
        metrics.update({k: float(host[k][env]) for k in ended_keys})
        episodes.append(EpisodeResult(env_id=env, length_s=float(host["length_s"][env]),
                                      survived=not bool(host["terminated"][env]),
                                      episode_return=float(host["return"][env]), metrics=metrics,
                                      episode_cost=float(host["cost"][env]),
                                      violations=int(host["violations"][env]),
                                      longest_violation=int(host["longest_violation"][env])))
    summary = {
        "episodes": float(len(episodes)),
        "survival": sum(e.survived for e in episodes) / max(1, len(episodes)),
        "mean_return": sum(e.episode_return for e in episodes) / max(1, len(episodes)),
    }
    if task.has_costs:  # the task's safety cost summed over each episode, its violating steps and longest run
        k = max(1, len(episodes))
        summary["mean_cost"] = sum(e.episode_cost for e in episodes) / k
        summary["violations"] = sum(e.violations for e in episodes) / k
        summary["longest_violation"] = sum(e.longest_violation for e in episodes) / k
    summary.update(summary_sums)  # step metrics: the mean over all valid env-steps
    for key in ended_keys:
        summary[key] = sum(e.metrics[key] for e in episodes) / len(episodes) if episodes else 0.0
    policy.train()
    return summary, episodes


def evaluate_final(policy: torch.nn.Module, cfg: TrainCfg, extra_overrides: dict | None = None, *,
                   device: str | None = None) -> dict[str, float]:
    """A run's closing evaluation (summary.json): `cfg.eval.num_envs` episodes with the eval settings, seed
    cfg.seed + 1000, on the training backend and `device` (default the config's), rounded to 4 digits."""
    task = make_policy_task(cfg, cfg.eval.num_envs, backend=cfg.backend, device=device or cfg.device,
                            seed=cfg.seed + 1000, overrides=merge(cfg.eval_task_overrides(), extra_overrides or {}))
    try:
        summary, _ = evaluate(policy, task)
    finally:
        task.close()
    return {k: round(v, 4) for k, v in summary.items()}
