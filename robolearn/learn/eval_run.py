"""Evaluate a run folder (PPO policy, teacher or distilled student) in batches: `robolearn eval` and `compare`.

`evaluate_run` runs `episodes` episodes (one per env, `num_envs` at a time, batch b seeded seed + b; by default
all at once, except on backends whose memory grows with the envs of a batch, see `MAX_BATCH`) with the
run's evaluation settings and a named randomization (`train`: the training ranges; others from the config's
`eval.randomization`, e.g. `wide`), and returns the report `robolearn eval` writes to JSON. The summary holds
`mean_return_ci95` and `survival_ci95` (from 2 episodes on): the half-width of the 95% confidence interval of the
per-episode mean, t * s / sqrt(n) with Student's t quantile for n - 1 degrees of freedom (t = 4.30 for 3 episodes,
2.78 for 5, 2.26 for 10, 1.98 for 100; the normal 1.96 would understate small-n intervals by up to a factor 6).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robolearn.errors import RobolearnError
from robolearn.learn.checkpoint import load_policy
from robolearn.learn.evaluate import EpisodeResult, evaluate
from robolearn.learn.hierarchical import make_policy_task
from robolearn.sim.tasks import Task

__all__ = ["ci95", "wilson95", "t_critical", "evaluate_run", "MAX_BATCH", "default_batch"]

# Envs per batch when --num-envs is not given, for backends whose memory grows with the envs of a batch: PyBullet
# runs one physics client (its own copy of the robot's meshes and collision shapes) per env, ~36 MB each for the
# Panda, so its 200-episode default ran 200 clients at once and peaked at 7.3 GB.
MAX_BATCH = {"pybullet": 25}


def default_batch(backend: str, episodes: int) -> int:
    """Envs stepped together when the caller does not say: every episode at once, at most MAX_BATCH[backend]."""
    return min(episodes, MAX_BATCH.get(backend, episodes))


def _t_two_sided_cdf(theta: float, df: int) -> float:
    """P(|T| <= sqrt(df) tan(theta)) for Student's t with integer `df` (Abramowitz & Stegun 26.7.3 and 26.7.4:
    a finite sum, exact up to rounding)."""
    c, s = math.cos(theta), math.sin(theta)
    c2 = c * c
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ... up to cos^(df-3)))
        if df == 1:
            return 2.0 * theta / math.pi
        term = total = 1.0
        for j in range(1, (df - 3) // 2 + 1):
            term *= c2 * (2 * j) / (2 * j + 1)
            total += term
        return 2.0 / math.pi * (theta + s * c * total)
    term = total = 1.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(df-2))
    for j in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * j - 1) / (2 * j)
        total += term
    return s * total


@functools.lru_cache(maxsize=256)
def t_critical(df: int, confidence: float = 0.95) -> float:
    """Student's t critical value: the t with P(|T| <= t) = `confidence` for `df` degrees of freedom (df = 2:
    4.3027, df = 4: 2.7764, df -> inf: 1.9600 for 95%).

    Exact CDF (A&S 26.7.3/4) inverted by bisection; above 1000 degrees of freedom the Cornish-Fisher expansion
    (A&S 26.7.5, error < 1e-12 there). Implemented here because scipy is not a dependency of robolearn."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom: expected an integer >= 1, got {df!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    if df > 1000:
        z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)
        g1 = (z**3 + z) / 4.0
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
        g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
        return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4
    lo, hi = 0.0, math.pi / 2.0  # the CDF increases with theta = atan(t / sqrt(df))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _t_two_sided_cdf(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return math.sqrt(df) * math.tan(0.5 * (lo + hi))


def ci95(values: list[float]) -> float:
    """Half-width of the 95% confidence interval of the mean of `values`: t_{0.975, n-1} s / sqrt(n) (Student's t,
    so that small n is not overconfident); NaN below 2 values."""
    n = len(values)
    return t_critical(n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else math.nan


def wilson95(successes: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a success rate (successes of n episodes): unlike p +- 1.96 sqrt(p(1-p)/n)
    it stays inside [0, 1] and is not empty at 0 or n successes (100 of 100 gives [0.963, 1])."""
    if n < 1:
        return (0.0, 1.0)
    z = 1.959963984540054
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_run(run: str | Path, *, backend: str = "mujoco", episodes: int | None = None,
                 num_envs: int | None = None, seed: int | None = None, randomization: str = "train",
                 task: str | None = None, on_first_batch: Callable[[Task], Callable | None] | None = None,
                 device: str = "cpu", checkpoint: int | None = None, safety_filter: dict[str, Any] | None = None
                 ) -> tuple[dict[str, Any], list[EpisodeResult]]:
    """(report, per-episode results) of the run's latest checkpoint (or model_<checkpoint>.pt).
    `on_first_batch(task)` may return a per-step callback (a video recorder) for the first batch. With
    `safety_filter` (FilteredPolicy's settings over the run's own, see `filter_settings`; {}: the run's) the
    actions pass through the run's Q_risk."""
    cfg, policy, ckpt = load_policy(run, task=task, checkpoint=checkpoint)
    if safety_filter is not None:
        safety_filter = filter_settings(ckpt, safety_filter)
        policy = _filtered(policy, ckpt, run, safety_filter)
    episodes = episodes if episodes is not None else cfg.eval.num_envs
    num_envs = min(num_envs if num_envs is not None else default_batch(backend, episodes), episodes)
    if episodes < 1 or num_envs < 1:
        raise RobolearnError(f"--episodes and --num-envs must be >= 1, got {episodes} and {num_envs}")
    seed = cfg.seed + 1000 if seed is None else seed
    overrides = cfg.eval_task_overrides(randomization)
    start = time.perf_counter()
    summaries, results = [], []
    for batch, first in enumerate(range(0, episodes, num_envs)):
        env = make_policy_task(cfg, min(num_envs, episodes - first), backend=backend, device=device,
                               seed=seed + batch, overrides=overrides)
        try:
            if safety_filter is not None:
                policy.bind(env)  # the filter's candidates may start from the env's measured joints
            on_step = on_first_batch(env) if on_first_batch is not None and batch == 0 else None
            summary, batch_results = evaluate(policy, env, on_step=on_step)
        finally:
            env.close()
        del env  # one batch's simulator at a time: memory does not grow with the episode count
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
    if results and "success" in results[0].metrics:  # tasks with a goal: a binomial interval, time over successes
        won = [r for r in results if r.metrics["success"] > 0.5]
        summary["success_ci95"] = [round(v, 4) for v in wilson95(len(won), len(results))]
        if "time_to_goal_s" in results[0].metrics:
            summary["time_to_goal_s"] = sum(r.metrics["time_to_goal_s"] for r in won) / len(won) if won else None
    kind = ckpt["config"]["student"]["kind"] if ckpt["format"] == "robolearn-student" else (
        "teacher" if policy.reads_privileged else "ppo")
    report = {"run": str(run), "task": cfg.task, "policy": kind, "history": policy.history, "backend": backend,
              "device": device,
              "randomization": randomization, "episodes": len(results), "num_envs": num_envs, "seed": seed,
              "task_overrides": overrides, "wall_time_s": round(time.perf_counter() - start, 2),
              "summary": summary, "per_episode": [dataclasses.asdict(r) for r in results]}
    if safety_filter is not None:
        report["safety_filter"] = {**safety_filter, **policy.stats()}
    return report, results


def _filtered(policy: Any, ckpt: dict[str, Any], run: str | Path, settings: dict[str, Any]) -> Any:
    from robolearn.learn.filtered_policy import FilteredPolicy
    from robolearn.learn.risk_critic import RiskCritic

    if "risk_critic" not in ckpt:
        raise RobolearnError(f"{run}: no safety critic in this checkpoint (train with --set "
                             f"safety_critic.enabled=true, or fit one to the policy with `robolearn risk {run}`)")
    return FilteredPolicy(policy, RiskCritic.from_checkpoint(ckpt["risk_critic"]), **settings)


def filter_settings(ckpt: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The safety filter's settings for a run: its config's (`safety_critic.filter_*`, `shrink_toward`; the deploy
    defaults for runs that predate them) with the `given` ones (not None) on top."""
    from robolearn.config import from_dict
    from robolearn.learn.risk_critic import SafetyCriticCfg

    sc = from_dict(SafetyCriticCfg, ckpt["config"].get("safety_critic", {}), where="the run's safety_critic")
    return {**sc.filter_kwargs(), **{k: v for k, v in given.items() if v is not None}}
