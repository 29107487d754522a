"""`robolearn train`: a PPO (or PPO-Lagrangian) run on a task, built from its training config and run by the
shared Runner."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from robolearn.config import to_dict
from robolearn.errors import ConfigError
from robolearn.learn.config import TrainCfg
from robolearn.learn.distributed import init_distributed
from robolearn.learn.evaluate import evaluate_final
from robolearn.learn.hierarchical import make_policy_task
from robolearn.learn.models.actor_critic import build_policy
from robolearn.learn.ppo import PPO
from robolearn.learn.ppo_lagrangian import PPOLagrangian
from robolearn.learn.risk_critic import RiskCriticLearner
from robolearn.learn.runner import Runner, RunnerCfg

__all__ = ["make_ppo_runner"]


def make_ppo_runner(cfg: TrainCfg, run_dir: str | Path, *, console: Console | None = None,
                    log_interval: int = 10) -> Runner:
    """The task (its own envs per rank under torchrun, seeded seed + rank), the actor-critic, PPO and the Runner,
    all on `cfg.device`."""
    if cfg.safety_critic.enabled and cfg.safety_critic.history > 1:
        raise ConfigError(f"safety_critic.history {cfg.safety_critic.history}: beside PPO the critic reads one frame; "
                          "fit a critic that reads a history to the trained policy with `robolearn risk RUN --set "
                          f"history={cfg.safety_critic.history}`")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    dist = init_distributed(cfg.dist_backend, cfg.device)  # None for a single process
    rank = dist.rank if dist is not None else 0
    device = dist.device if dist is not None else torch.device(cfg.device)
    try:
        torch.manual_seed(cfg.seed + rank)  # each rank explores with its own action noise...
        task = make_policy_task(cfg, cfg.num_envs, backend=cfg.backend, device=str(device), seed=cfg.seed + rank,
                                overrides=cfg.task_overrides)  # ...on its own envs
    except BaseException:
        if dist is not None:
            dist.close(wait_for_peers=False)
        raise
    obs_dims = task.obs_dims
    with device:  # parameters are created on the training device
        policy = build_policy(cfg.network, obs_dims, task.num_actions, cfg.task)
    if dist is not None:
        dist.broadcast_module(policy)  # every rank starts from rank 0's parameters
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # the same permutations on every rank
    risk = None
    if cfg.safety_critic.enabled:
        if dist is not None:
            dist.close(wait_for_peers=False)
            raise ConfigError("safety_critic.enabled: not yet with multi-process training (its gradients are not "
                              "averaged over ranks); train it on one process")
        risk = RiskCriticLearner(obs_dims["policy"], task.num_actions, cfg.safety_critic,
                                 generator=torch.Generator(device=device).manual_seed(cfg.seed + 2), device=device)
    common = dict(num_envs=cfg.num_envs, steps_per_env=cfg.steps_per_env, generator=generator, dist=dist,
                  total_updates=cfg.max_iterations, risk=risk)
    if cfg.algorithm == "ppo-lag":
        with device:
            ppo: PPO = PPOLagrangian(policy, cfg.ppo, cfg.lagrangian, critic_hidden=cfg.network.critic_hidden,
                                     activation=cfg.network.activation, **common)
        if dist is not None:
            dist.broadcast_module(ppo.cost_critic)
    else:
        ppo = PPO(policy, cfg.ppo, **common)
    if ppo.shield is not None:
        ppo.shield.bind(task)
    meta = {"task": cfg.task, "obs_dims": obs_dims, "num_actions": task.num_actions,
            "joint_names": list(task.robot.joint_names)}
    settings = RunnerCfg(steps_per_env=cfg.steps_per_env, max_iterations=cfg.max_iterations,
                         max_time_s=cfg.max_time_s, save_interval=cfg.save_interval, log_interval=log_interval)
    return Runner(ppo, task, settings, run_dir, config=to_dict(cfg), meta=meta, console=console, dist=dist,
                  evaluate=lambda p: evaluate_final(p, cfg, device=str(device)))
