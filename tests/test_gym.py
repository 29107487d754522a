"""Any Gymnasium environment through the same Runner and PPO: `robolearn train gym:<EnvId>`. Real Gymnasium
environments (MuJoCo's HalfCheetah-v5, a Safety-Gymnasium-style cost signal from a registered env)."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from robolearn.errors import ConfigError
from robolearn.sim.tasks import make_task


class CostlyPendulum(gym.Wrapper):
    """Pendulum with a Safety-Gymnasium-style `info["cost"]`: 1 while the pole is beyond 90 degrees."""

    def __init__(self) -> None:
        super().__init__(gym.make("Pendulum-v1", max_episode_steps=10))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "cost": float(obs[0] < 0.0)}


gym.register("CostlyPendulum-v0", entry_point=CostlyPendulum)


def test_a_gymnasium_env_is_a_task():
    task = make_task("gym:HalfCheetah-v5", 3, seed=0, overrides={"make_kwargs": {"max_episode_steps": 4},
                                                                  "normalize_reward": False})
    try:
        assert task.obs_dims == {"policy": 17, "privileged": 17} and task.num_actions == 6
        assert task.max_episode_steps == 4 and task.dt == pytest.approx(0.05)
        total = torch.zeros(3)
        for _ in range(4):
            obs, reward, cost, terminated, truncated, info = task.step(torch.full((3, 6), 5.0))  # clipped to 1
            total += reward
            assert obs["policy"].dtype == torch.float32 and obs["policy"].shape == (3, 17)
            assert (cost == 0).all() and info["costs"] == {}
        assert truncated.all() and not terminated.any() and info["time_outs"].all() and info["ended"]["mask"].all()
        torch.testing.assert_close(info["ended"]["raw_return"], total)
        stats = task.episode_stats()
        assert stats["episodes"] == 3 and stats["episode_length_s"] == pytest.approx(0.2)
        assert stats["raw_return"] == pytest.approx(float(total.mean()), rel=1e-5)
    finally:
        task.close()


def test_reward_normalization_divides_by_the_return_std():
    raw = make_task("gym:HalfCheetah-v5", 4, seed=1, overrides={"normalize_reward": False})
    norm = make_task("gym:HalfCheetah-v5", 4, seed=1)
    try:
        g = torch.Generator().manual_seed(0)
        for _ in range(200):
            a = torch.rand(4, 6, generator=g) * 2 - 1
            r_raw = raw.step(a)[1]
            r_norm = norm.step(a)[1]
        ratio = (r_raw / r_norm).numpy()
        assert np.allclose(ratio, ratio[0], rtol=1e-4)  # one scale for all envs: the return's running std
        assert np.isclose(ratio[0], np.sqrt(norm._returns_norm.var + 1e-8), rtol=1e-4)
    finally:
        raw.close()
        norm.close()


def test_an_env_cost_becomes_the_task_cost():
    task = make_task("gym:CostlyPendulum-v0", 4, seed=0)
    try:
        costs = [task.step(torch.zeros(4, 1))[2] for _ in range(10)]
        assert task.has_costs and set(torch.cat(costs).tolist()) <= {0.0, 1.0}
    finally:
        task.close()


@pytest.mark.parametrize(("env", "message"), [
    ("gym:HalfCheetah-v99", r"task gym:HalfCheetah-v99: .*HalfCheetah"),
    ("gym:CartPole-v1", "needs a flat Box observation and a Box action space"),
])
def test_unusable_envs_are_one_line_errors(env, message):
    with pytest.raises(ConfigError, match=message):
        make_task(env, 2)


def test_cli_trains_a_gymnasium_env_and_evaluates_its_raw_return(tmp_path):
    cmd = [sys.executable, "-m", "robolearn.cli", "train", "gym:HalfCheetah-v5", "--iterations", "2", "--set",
           "steps_per_env=64", "--set", "ppo.minibatches=4", "--set", "eval.num_envs=2", "--set",
           "eval.task_overrides.make_kwargs={max_episode_steps: 50}", "--runs-dir", str(tmp_path), "--name", "hc",
           "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "hc" / "summary.json").read_text())
    assert summary["env_steps"] == 2 * 8 * 64 and summary["backend"] == "gymnasium"
    assert summary["eval"]["episodes"] == 2 and "raw_return" in summary["eval"]
    # evaluation turns reward normalization off: the return it reports is the environment's own
    assert summary["eval"]["mean_return"] == pytest.approx(summary["eval"]["raw_return"], rel=1e-4)
    ckpt = torch.load(tmp_path / "hc" / "checkpoints" / "model.pt", weights_only=False)
    assert ckpt["task"] == "gym:HalfCheetah-v5" and ckpt["config"]["ppo"]["schedule"] == "linear"
    assert ckpt["updates"] == 2
    # the reward normalization's statistics travel with the checkpoint: a resume keeps the reward scale
    assert ckpt["task_state"]["return_count"] > 2 * 8 * 64 - 1 and ckpt["task_state"]["return_var"] != 1.0
    task = make_task("gym:HalfCheetah-v5", 2, seed=3)
    try:
        task.load_state_dict(ckpt["task_state"])
        assert task._returns_norm.var == ckpt["task_state"]["return_var"]
    finally:
        task.close()
