"""PPO-Lagrangian: PPO under a per-episode cost limit (Ray, Achiam and Amodei 2019; the OmniSafe formulation).

Constrained problem: maximize the expected return J_r subject to J_c <= d, where J_c is the expected sum of the
task's per-step cost over an episode and d the cost limit (`lagrangian.cost_limit`). Its Lagrangian relaxation
max_pi min_{lambda >= 0} J_r - lambda (J_c - d) is solved by alternating:

- the multiplier: one Adam step per iteration on -lambda (J_c - d) with J_c the mean cost of the episodes that
  ended in the iteration's rollout, then lambda is projected onto [0, multiplier_max]; it grows while the
  policy's episodes cost more than d and shrinks (to 0) while they cost less. Adam (torch's defaults) is done in
  Python floats: J_c is read on the host once per iteration anyway, and a torch optimizer on a one-element
  tensor would add host syncs (its step counter) on a GPU;
- the policy: PPO's clipped surrogate on the advantages (A_r - lambda A_c) / (1 + lambda), where A_c comes from a
  second critic V_c that estimates the discounted cost (GAE over the cost, time-outs bootstrapped as for the
  reward, centred but not scaled). Dividing by 1 + lambda keeps the surrogate's scale bounded as lambda grows.

The cost critic reads the critic's (privileged) observations through the critic's normalizer, and is trained
with the same optimizer as the actor-critic (squared error, weighted by `ppo.value_coef`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robolearn.errors import CheckpointError, ConfigError
from robolearn.learn.distributed import Distributed
from robolearn.learn.models.actor_critic import ActorCritic, mlp
from robolearn.learn.ppo import PPO, PPOCfg
from robolearn.learn.risk_critic import RiskCriticLearner
from robolearn.learn.storage import Batch

__all__ = ["LagrangianCfg", "PPOLagrangian"]


@dataclass(kw_only=True)
class LagrangianCfg:
    cost_limit: float = 25.0  # d: the allowed expected cost per episode (Safety-Gymnasium's usual limit)
    multiplier_init: float = 0.001  # OmniSafe's defaults
    multiplier_lr: float = 0.035
    multiplier_max: float = 100.0

    def __post_init__(self) -> None:
        if not self.cost_limit >= 0:
            raise ConfigError(f"lagrangian.cost_limit must be >= 0, got {self.cost_limit}")
        if not 0 <= self.multiplier_init <= self.multiplier_max:
            raise ConfigError(f"lagrangian.multiplier_init must be in [0, multiplier_max={self.multiplier_max}], "
                              f"got {self.multiplier_init}")
        if not self.multiplier_lr > 0:
            raise ConfigError(f"lagrangian.multiplier_lr must be > 0, got {self.multiplier_lr}")


class PPOLagrangian(PPO):
    """PPO with a cost critic and a Lagrange multiplier on the episode cost (see the module docstring)."""

    checkpoint_format = "robolearn-ppo-lag"
    uses_cost = True
    extra_loss_name = "loss/cost_value"

    def __init__(self, policy: ActorCritic, cfg: PPOCfg, lagrangian: LagrangianCfg, *, num_envs: int,
                 steps_per_env: int, generator: torch.Generator, critic_hidden: list[int], activation: str = "elu",
                 dist: Distributed | None = None, total_updates: int = 0,
                 risk: RiskCriticLearner | None = None) -> None:
        device = policy.log_std.device
        critic_dim = policy.critic_norm.mean.shape[0]
        self.cost_critic = mlp(critic_dim, critic_hidden, 1, activation).to(device)
        self.lagrangian = lagrangian
        self.multiplier = float(lagrangian.multiplier_init)  # lambda
        self._adam = {"step": 0, "m": 0.0, "v": 0.0}  # the multiplier's Adam moments (betas 0.9, 0.999)
        super().__init__(policy, cfg, num_envs=num_envs, steps_per_env=steps_per_env, generator=generator, dist=dist,
                         total_updates=total_updates, risk=risk)
        self._episode_cost = torch.zeros(num_envs, device=device)  # cost so far of each env's running episode
        self._ended = torch.zeros(2, dtype=torch.float64, device=device)  # (cost sum, count) of ended episodes
        self._saw_costs = False
        self._last_episode_cost = float("nan")

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.cost_critic.parameters())

    def cost_value(self, critic_obs: torch.Tensor) -> torch.Tensor:
        return self.cost_critic(self.policy.critic_norm(critic_obs)).squeeze(-1)

    # -- collection ------------------------------------------------------------------------------------------
    def process_env_step(self, obs: dict[str, torch.Tensor], reward: torch.Tensor, cost: torch.Tensor,
                         terminated: torch.Tensor, truncated: torch.Tensor, info: dict[str, Any]) -> None:
        if not self._saw_costs:
            if not info.get("costs"):
                raise ConfigError("ppo-lag: the task reports no cost (declare cost terms under `costs:` in the "
                                  "task's YAML, or train a Gymnasium env that reports info['cost'])")
            self._saw_costs = True
        cost_values = self.cost_value(self._step[1])  # V_c of the state the action was taken in
        super().process_env_step(obs, reward, cost, terminated, truncated, info)
        done = terminated | truncated
        self._episode_cost += cost
        self._ended += torch.stack([torch.where(done, self._episode_cost, 0.0).sum(), done.sum()]).double()
        self._episode_cost = torch.where(done, 0.0, self._episode_cost)
        self.storage.add_cost(cost + self.cfg.gamma * cost_values * info["time_outs"], cost_values)

    def compute_returns(self, obs: dict[str, torch.Tensor]) -> None:
        last_cost_values = self.cost_value(obs["privileged"])
        self.storage.compute_cost_gae(last_cost_values, self.cfg.gamma, self.cfg.lam,
                                      mean_std=None if self.dist is None else self.dist.mean_std)
        super().compute_returns(obs)

    # -- update ----------------------------------------------------------------------------------------------
    def _update_multiplier(self) -> None:
        """One projected Adam step on lambda from the episodes that ended since the last update (none: no step)."""
        ended = self._ended if self.dist is None else self.dist.sum(self._ended)
        cost_sum, count = ended.tolist()  # the one host read per iteration
        self._ended.zero_()
        if count == 0:
            return
        self._last_episode_cost = cost_sum / count
        grad = -(self._last_episode_cost - self.lagrangian.cost_limit)  # d/d lambda of -lambda (J_c - d)
        adam, (b1, b2) = self._adam, (0.9, 0.999)
        adam["step"] += 1
        adam["m"] = b1 * adam["m"] + (1 - b1) * grad
        adam["v"] = b2 * adam["v"] + (1 - b2) * grad * grad
        m_hat, v_hat = adam["m"] / (1 - b1 ** adam["step"]), adam["v"] / (1 - b2 ** adam["step"])
        step = self.lagrangian.multiplier_lr * m_hat / (math.sqrt(v_hat) + 1e-8)
        self.multiplier = min(max(self.multiplier - step, 0.0), self.lagrangian.multiplier_max)

    def policy_advantages(self, batch: Batch) -> torch.Tensor:
        lam = self.multiplier
        return (batch.advantages - lam * batch.cost_advantages) / (1.0 + lam)

    def extra_loss(self, batch: Batch) -> torch.Tensor:
        return (self.cost_value(batch.critic_obs) - batch.cost_returns).square().mean()

    def update(self, *, shards: int = 1) -> dict[str, float]:
        self._update_multiplier()  # every rank takes the same step from the same sums
        stats = super().update(shards=shards)
        stats["lagrangian/multiplier"] = self.multiplier
        stats["lagrangian/episode_cost"] = self._last_episode_cost
        stats["lagrangian/cost_limit"] = self.lagrangian.cost_limit
        return stats

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cost_critic": self.cost_critic.state_dict(),
                "multiplier": self.multiplier, "multiplier_adam": dict(self._adam)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            self.cost_critic.load_state_dict(state["cost_critic"])
        except (KeyError, RuntimeError):
            raise CheckpointError("checkpoint: no cost critic matching the config (was it trained with "
                                  "--algo ppo-lag and the same network section?)") from None
        self.multiplier = float(state["multiplier"])
        self._adam = dict(state["multiplier_adam"])

    def summary(self, stats: dict[str, float]) -> dict[str, Any]:
        last = self._last_episode_cost
        return {"lagrangian": {"cost_limit": self.lagrangian.cost_limit, "multiplier": self.multiplier,
                               "last_episode_cost": None if last != last else last}}  # NaN: no episode ended
