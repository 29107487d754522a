"""PPO-Lagrangian (`robolearn train --algo ppo-lag`): the multiplier's update, the combined advantage, and a toy
constrained problem solved through the shared Runner that unconstrained PPO violates.

The toy is a Gymnasium env (robolearn's `gym:` path, with its `info["cost"]`): one action a in [-1, 1] per step,
reward a, cost 1 whenever a > 0.5, 20 steps per episode. Unconstrained, PPO pushes a to 1 and pays ~20 per
episode; under a cost limit of 2 per episode the best policy keeps a just under 0.5.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from robolearn.errors import CheckpointError, ConfigError
from robolearn.learn.checkpoint import load_policy
from robolearn.learn.config import load_train_cfg
from robolearn.learn.models.actor_critic import ActorCritic
from robolearn.learn.ppo import PPOCfg
from robolearn.learn.ppo_lagrangian import LagrangianCfg, PPOLagrangian
from robolearn.learn.storage import Batch
from robolearn.learn.train import make_ppo_runner

TOY = "RobolearnTest/CostlySpeed-v0"
LIMIT = 2.0


class CostlySpeed(gym.Env):
    """Reward a, cost 1 when a > 0.5; the observation is the fraction of the episode gone."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self) -> None:
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        a = float(np.clip(action[0], -1.0, 1.0))
        self.t += 1
        return (np.array([self.t / 20], np.float32), a, False, False, {"cost": float(a > 0.5)})


if TOY not in gym.registry:
    gym.register(id=TOY, entry_point=CostlySpeed, max_episode_steps=20)


def _algo(num_envs: int = 2, steps: int = 64, **lag) -> PPOLagrangian:
    policy = ActorCritic(1, 1, 1, actor_hidden=[8], critic_hidden=[8])
    return PPOLagrangian(policy, PPOCfg(minibatches=1, epochs=1), LagrangianCfg(**lag), num_envs=num_envs,
                         steps_per_env=steps, generator=torch.Generator().manual_seed(0), critic_hidden=[8])


def _step(algo: PPOLagrangian, cost: list[float], done: list[bool]) -> None:
    n = len(cost)
    obs = {"policy": torch.zeros(n, 1), "privileged": torch.zeros(n, 1)}
    with torch.inference_mode():
        algo.act(obs)
        algo.process_env_step(obs, torch.zeros(n), torch.tensor(cost), torch.tensor(done), torch.zeros(n, dtype=bool),
                              {"time_outs": torch.zeros(n), "costs": {"c": torch.tensor(cost)}})


def test_the_multiplier_rises_above_the_limit_falls_below_it_and_stays_non_negative():
    algo = _algo(cost_limit=1.0, multiplier_init=0.5, multiplier_lr=0.1)
    for done in (False, False, False, True):  # env 0's episode costs 4 > 1; env 1's never ends
        _step(algo, [1.0, 5.0], [done, False])
    algo._update_multiplier()
    assert algo._last_episode_cost == pytest.approx(4.0)  # only ended episodes count
    assert algo.multiplier == pytest.approx(0.6, abs=1e-4)  # Adam's first step: lr
    algo._update_multiplier()  # no episode ended since: no step
    assert algo.multiplier == pytest.approx(0.6, abs=1e-4)
    low = _algo(cost_limit=1.0, multiplier_init=0.05, multiplier_lr=0.1)
    _step(low, [0.0, 0.0], [True, True])  # episodes of cost 0 < 1: lambda falls by lr, and is clamped at 0
    low._update_multiplier()
    assert low.multiplier == 0.0 and low._last_episode_cost == 0.0


def test_the_policy_advantage_weighs_the_cost_advantage_by_the_multiplier():
    algo = _algo()
    algo.multiplier = 3.0
    adv, adv_c = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])
    batch = Batch(*(torch.zeros(2, 1),) * 6, torch.zeros(2), torch.zeros(2), adv, torch.zeros(2), torch.zeros(2),
                  adv_c)
    torch.testing.assert_close(algo.policy_advantages(batch), (adv - 3.0 * adv_c) / 4.0)


def test_ppo_lag_on_a_task_without_costs_says_so():
    algo = _algo()
    obs = {"policy": torch.zeros(2, 1), "privileged": torch.zeros(2, 1)}
    with torch.inference_mode(), pytest.raises(ConfigError, match="ppo-lag: the task reports no cost"):
        algo.act(obs)
        algo.process_env_step(obs, torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=bool),
                              torch.zeros(2, dtype=bool), {"time_outs": torch.zeros(2), "costs": {}})


def _cfg(algorithm: str, iterations: int = 70):
    return load_train_cfg(f"gym:{TOY}", overrides={
        "algorithm": algorithm, "max_iterations": iterations, "steps_per_env": 64, "seed": 0,
        "ppo": {"epochs": 4, "minibatches": 4, "schedule": "fixed", "learning_rate": 3e-3},
        "lagrangian": {"cost_limit": LIMIT, "multiplier_lr": 0.2},
        "task_overrides": {"normalize_reward": False}, "eval": {"num_envs": 8}})


def _train(tmp_path, algorithm: str) -> dict:
    return make_ppo_runner(_cfg(algorithm), tmp_path / algorithm, log_interval=1000).learn(progress=False)


def test_ppo_lagrangian_keeps_the_episode_cost_under_the_limit_where_ppo_does_not(tmp_path):
    ppo = _train(tmp_path, "ppo")
    lag = _train(tmp_path, "ppo-lag")
    # unconstrained: a -> 1, about one cost per step
    assert ppo["eval"]["mean_cost"] > 15.0 and ppo["eval"]["mean_return"] > 15.0
    # evaluation counts the violating steps (cost 1 each here) and the longest run of them
    assert ppo["eval"]["violations"] == ppo["eval"]["mean_cost"] and ppo["eval"]["longest_violation"] > 15.0
    # constrained: under the limit, and still pushing a up to it (a return a policy hiding at a <= 0 cannot get)
    assert lag["eval"]["mean_cost"] <= LIMIT and lag["eval"]["mean_return"] > 6.0
    assert lag["algorithm"] == "robolearn-ppo-lag" and lag["lagrangian"]["cost_limit"] == LIMIT
    assert lag["lagrangian"]["multiplier"] > 0.0
    summary = json.loads((tmp_path / "ppo-lag" / "summary.json").read_text())
    assert summary["lagrangian"] == lag["lagrangian"]
    # the deployable policy loads like a PPO run's (eval, export); resuming restores the multiplier
    cfg, policy, ckpt = load_policy(tmp_path / "ppo-lag")
    assert cfg.algorithm == "ppo-lag" and ckpt["format"] == "robolearn-ppo-lag" and "cost_critic" in ckpt
    assert ckpt["multiplier"] == pytest.approx(lag["lagrangian"]["multiplier"])
    resumed = make_ppo_runner(_cfg("ppo-lag", iterations=1), tmp_path / "ppo-lag", log_interval=1000)
    resumed.resume(tmp_path / "ppo-lag")
    assert resumed.algorithm.multiplier == pytest.approx(ckpt["multiplier"])
    torch.testing.assert_close(resumed.algorithm.cost_critic.state_dict(), ckpt["cost_critic"])
    with pytest.raises(CheckpointError, match="robolearn-ppo checkpoint cannot be resumed by PPOLagrangian"):
        make_ppo_runner(_cfg("ppo-lag", iterations=1), tmp_path / "x", log_interval=1000).resume(tmp_path / "ppo")
    # the multiplier and the cost critic's loss are in TensorBoard beside the episode cost
    acc = EventAccumulator(str(tmp_path / "ppo-lag" / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    multipliers = [e.value for e in acc.Scalars("lagrangian/multiplier")]
    assert len(multipliers) == 70 and multipliers[-1] == pytest.approx(lag["lagrangian"]["multiplier"])
    assert max(multipliers) > multipliers[0] and "loss/cost_value" in acc.Tags()["scalars"]
