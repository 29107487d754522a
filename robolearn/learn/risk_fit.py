"""`robolearn risk RUN`: fit a Q_risk safety critic to a trained PPO policy, through the shared Runner.

The policy is frozen; it acts with its own Gaussian (its learned std: the critic must know actions around the
mean, which the filter's candidates are) in the run's task with the run's training settings (or a named
randomization, e.g. wide). In `safety_critic.candidate_fraction` of the envs each step it executes a candidate as
the safety filter draws them instead (shrunk toward 0 or perturbed), so that the critic has seen those too; with
`safety_critic.filter_in_training` the other envs execute the policy through the filter with the critic being
fitted, so that the data lie where the filter decides (Recovery RL's Q_risk of the filtered policy). Each
iteration collects `steps_per_env` steps from every env and fits the critic on them (risk_critic.py); with
`safety_critic.history` H the critic reads each step's last H observation frames (a new episode repeats its
first). The result is a run folder whose checkpoint is the source's (same policy weights, PPO state, config with
`safety_critic.enabled`) plus the critic: eval (`--safety-filter`), export (the bundle's `safety_critic` graph)
and `train --resume` take it like any PPO run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from rich.console import Console
from torch import nn

from robolearn.config import from_dict, merge, to_dict
from robolearn.errors import ConfigError
from robolearn.learn.algorithm import Algorithm
from robolearn.learn.checkpoint import PPO_FORMATS, load_checkpoint, load_policy
from robolearn.learn.evaluate import evaluate_final
from robolearn.learn.filtered_policy import FilteredPolicy, shrink_anchor
from robolearn.learn.history import FrameHistory
from robolearn.learn.risk_critic import RiskCriticLearner, SafetyCriticCfg, violation_signal
from robolearn.learn.runner import Runner, RunnerCfg
from robolearn.sim.tasks import make_task

__all__ = ["RiskFit", "make_risk_fit_runner"]


class RiskFit(Algorithm):
    """A frozen actor-critic collecting with its own action noise; a RiskCriticLearner fitted on each rollout."""

    progress_metric: ClassVar[tuple[str, str]] = ("Q_risk", "risk/mean_q")

    def __init__(self, policy: nn.Module, source_state: dict[str, Any], learner: RiskCriticLearner, *,
                 num_envs: int, steps_per_env: int, checkpoint_format: str, task: Any = None) -> None:
        self.policy, self.learner, self.source_state = policy.eval().requires_grad_(False), learner, source_state
        self.checkpoint_format = checkpoint_format  # the source's: the result is that kind of run
        self.task = task  # its measured joints anchor the candidates with shrink_toward: measured
        cfg = learner.cfg
        if (cfg.candidate_fraction > 0 or cfg.filter_in_training) and cfg.shrink_toward == "measured":
            task.measured_action()  # a task without joint position actions fails here, by name
        self.shield: FilteredPolicy | None = None  # the filter in the loop (safety_critic.filter_in_training)
        if cfg.filter_in_training:
            self.shield = FilteredPolicy(self.policy, learner.critic, **cfg.filter_kwargs())
            self.shield.bind(task)
        dev = next(policy.parameters()).device
        obs_dim = learner.shape["obs_dim"]
        T, N, A = steps_per_env, num_envs, learner.shape["num_actions"]
        # the critic's input per step: the last `history` policy frames (FrameHistory: a new episode repeats its
        # first frame, as the deploy filter does on a fresh start)
        self.history = FrameHistory(N, obs_dim // cfg.history, cfg.history, dev) if cfg.history > 1 else None
        self._fresh = torch.zeros(N, dtype=torch.bool, device=dev)  # envs whose episode ended on the last step
        self.frames = torch.zeros(T, N, obs_dim, device=dev)
        self.actions = torch.zeros(T, N, A, device=dev)
        self.costs = torch.zeros(T, N, device=dev)
        self.dones = torch.zeros(T, N, device=dev)
        self.t = 0

    def act(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        actions = self.policy.distribution(self.policy.actor_input(obs)).sample()
        cfg = self.learner.cfg
        seen = obs["policy"] if self.history is None else self.history.push(obs["policy"], self._fresh)
        n, dev = actions.shape[0], actions.device
        pick = torch.zeros(n, dtype=torch.bool, device=dev)
        if cfg.candidate_fraction > 0:  # what the filter will score: shrunk toward 0, or perturbed
            pick = torch.rand(n, device=dev) < cfg.candidate_fraction
            shrink = torch.rand(n, 1, device=dev) < 0.5
            anchor = shrink_anchor(cfg.shrink_toward, self.task, actions)
            shrunk = anchor + (actions - anchor) * torch.rand(n, 1, device=dev)
            perturbed = actions + cfg.candidate_noise * torch.randn_like(actions)
            candidates = torch.where(shrink, shrunk, perturbed)
        if self.shield is not None:  # the other envs run the filtered policy: data where the filter decides
            actions = self.shield.filter(seen, actions)
        if cfg.candidate_fraction > 0:
            actions = torch.where(pick.unsqueeze(1), candidates, actions)
        self.frames[self.t], self.actions[self.t] = seen, actions
        return actions

    def process_env_step(self, obs, reward, cost, terminated, truncated, info) -> None:
        self.costs[self.t] = violation_signal(self.learner.cfg, cost, info)
        self._fresh = terminated | truncated
        self.dones[self.t] = self._fresh.float()
        self.t += 1

    def update(self) -> dict[str, float]:
        self.t = 0
        return self.learner.update(self.frames, self.actions, self.costs, self.dones)

    def state_dict(self) -> dict[str, Any]:
        return {**self.source_state, "risk_critic": self.learner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["risk_critic"])

    def deployable(self) -> nn.Module:
        return self.policy


def make_risk_fit_runner(source: str | Path, run_dir: str | Path, *, num_envs: int | None = None,
                         steps_per_env: int = 24, iterations: int = 100, max_time_s: float = 0.0,
                         randomization: str = "train", critic: dict[str, Any] | None = None, seed: int = 0,
                         console: Console | None = None, log_interval: int = 10) -> Runner:
    """A Runner that fits a safety critic to the policy of the PPO run `source` (see the module doc)."""
    ckpt = load_checkpoint(source)
    if ckpt["format"] not in PPO_FORMATS:
        raise ConfigError(f"{source}: a {ckpt['format']} checkpoint; `robolearn risk` fits a critic to a PPO run's "
                          f"policy (robolearn train)")
    cfg, policy, _ = load_policy(source)
    settings = merge(to_dict(cfg.safety_critic), {**(critic or {}), "enabled": True})
    cfg.safety_critic = from_dict(SafetyCriticCfg, settings, where="safety_critic (robolearn risk --set)")
    num_envs = num_envs or cfg.num_envs
    torch.manual_seed(seed)
    overrides = cfg.task_overrides if randomization == "train" else merge(
        cfg.task_overrides, {"randomization": cfg.eval_task_overrides(randomization)["randomization"]})
    task = make_task(cfg.task, num_envs, backend=cfg.backend, device="cpu", seed=seed, overrides=overrides)
    if not task.has_costs:
        task.close()
        raise ConfigError(f"task {cfg.task} declares no cost terms: a safety critic learns from the cost "
                          f"(costs: in the task's YAML)")
    task.desynchronize_episodes()  # every rollout then holds every phase of an episode (fixed-length episodes
    # started together would give the critic one phase per iteration: it forgot the others in between)
    learner = RiskCriticLearner(task.obs_dims["policy"], task.num_actions, cfg.safety_critic,
                                generator=torch.Generator().manual_seed(seed + 2))
    source_state = {k: ckpt[k] for k in ("model", "optimizer", "lr", "rng", "updates") if k in ckpt}
    algorithm = RiskFit(policy, source_state, learner, num_envs=num_envs, steps_per_env=steps_per_env,
                        checkpoint_format=ckpt["format"], task=task)
    meta = {"task": cfg.task, "obs_dims": task.obs_dims, "num_actions": task.num_actions,
            "joint_names": list(task.robot.joint_names),
            "risk_fit": {"source": str(source), "randomization": randomization, "num_envs": num_envs,
                         "steps_per_env": steps_per_env}}
    settings = RunnerCfg(steps_per_env=steps_per_env, max_iterations=iterations, max_time_s=max_time_s,
                         save_interval=max(1, iterations // 4), log_interval=log_interval)
    return Runner(algorithm, task, settings, run_dir, config=to_dict(cfg), meta=meta, console=console,
                  evaluate=lambda p: evaluate_final(p, cfg))
