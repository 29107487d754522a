"""The Algorithm interface through the shared Runner: the call order of an iteration, budgets, checkpoints and
resume through the algorithm's own state, the logged statistics, and an offline algorithm (no environment)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from robolearn.errors import CheckpointError
from robolearn.learn.algorithm import Algorithm
from robolearn.learn.checkpoint import load_checkpoint
from robolearn.learn.runner import Runner, RunnerCfg
from robolearn.sim.tasks import make_task


class Recorder(Algorithm):
    """A toy on-policy method: a linear policy nudged toward the actions of the better half of its rollout
    (cross-entropy-method style); it also records the calls the Runner makes."""

    checkpoint_format = "robolearn-ppo"  # the checkpoint formats load_checkpoint accepts

    def __init__(self, obs_dim: int, num_actions: int) -> None:
        self.net = nn.Linear(obs_dim, num_actions)
        self.calls: list[str] = []
        self.steps = 0
        self.rollout: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def act(self, obs):
        self.calls.append("act")
        assert torch.is_inference_mode_enabled()
        self._obs = obs["policy"]
        self._actions = self.net(self._obs) + 0.3 * torch.randn(self._obs.shape[0], self.net.out_features)
        return self._actions

    def process_env_step(self, obs, reward, cost, terminated, truncated, info):
        self.calls.append("process")
        self.steps += 1
        self.rollout.append((self._obs, self._actions, reward))

    def compute_returns(self, obs):
        self.calls.append("returns")

    def update(self) -> dict[str, float]:
        self.calls.append("update")
        assert not torch.is_inference_mode_enabled()
        obs = torch.cat([o for o, _, _ in self.rollout]).clone()
        actions = torch.cat([a for _, a, _ in self.rollout]).clone()
        reward = torch.cat([r for _, _, r in self.rollout]).clone()
        elite = reward >= reward.median()
        loss = (self.net(obs[elite]) - actions[elite]).square().mean()
        loss.backward()
        with torch.no_grad():
            for p in self.net.parameters():
                p -= 0.1 * p.grad
                p.grad = None
        self.rollout.clear()
        return {"loss/elite": float(loss.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.steps = state["steps"]

    def deployable(self) -> nn.Module:
        return self.net


def _runner(tmp_path, algo: Algorithm, task, iterations: int, **kw) -> Runner:
    meta = {"task": "panda-reach", "obs_dims": task.obs_dims, "num_actions": task.num_actions,
            "joint_names": list(task.robot.joint_names)}
    cfg = RunnerCfg(steps_per_env=5, max_iterations=iterations, save_interval=2, **kw)
    return Runner(algo, task, cfg, tmp_path / "run", config={"toy": True}, meta=meta,
                  evaluate=lambda policy: {"weight_norm": float(policy.weight.norm())})


def test_an_algorithm_runs_under_the_runner_in_the_documented_order(tmp_path):
    task = make_task("panda-reach", 4, seed=0, overrides={"episode_length_s": 0.1})  # 5-step episodes
    algo = Recorder(task.obs_dims["policy"], task.num_actions)
    runner = _runner(tmp_path, algo, task, 3)
    summary = runner.learn(progress=False)
    per_iteration = ["act", "process"] * 5 + ["returns", "update"]
    assert algo.calls == per_iteration * 3
    assert summary["iterations"] == 3 and summary["env_steps"] == 3 * 4 * 5
    assert summary["final_mean_reward"] is not None  # the Runner's episode log saw the 5-step episodes end
    assert summary["eval"] == {"weight_norm": pytest.approx(float(algo.net.weight.norm()))}
    files = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert files == ["model.pt", "model_2.pt", "model_3.pt"]
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["iteration"] == 3 and ckpt["steps"] == 15 and ckpt["config"] == {"toy": True}
    assert torch.equal(ckpt["model"]["weight"], algo.net.weight.detach())

    # Resume: the algorithm's own state comes back, the counters continue, the budget is fresh.
    task2 = make_task("panda-reach", 4, seed=1, overrides={"episode_length_s": 0.1})
    again = Recorder(task.obs_dims["policy"], task.num_actions)
    runner2 = _runner(tmp_path, again, task2, 2)
    runner2.resume(tmp_path / "run")
    assert again.steps == 15 and torch.equal(again.net.weight, algo.net.weight)
    summary = runner2.learn(progress=False)
    assert summary["iterations"] == 5 and summary["iterations_this_run"] == 2 and again.steps == 25


def test_a_checkpoint_of_another_algorithm_is_refused(tmp_path):
    task = make_task("panda-reach", 2, seed=0)
    algo = Recorder(task.obs_dims["policy"], task.num_actions)
    _runner(tmp_path, algo, task, 1).learn(progress=False)
    other = Recorder(task.obs_dims["policy"], task.num_actions)
    other.checkpoint_format = "robolearn-student"
    runner = _runner(tmp_path, other, make_task("panda-reach", 2, seed=0), 1)
    with pytest.raises(CheckpointError, match="a robolearn-ppo checkpoint cannot be resumed by Recorder"):
        runner.resume(tmp_path / "run")
    runner.close()


class BehaviourCloning(Algorithm):
    """A toy offline method: fit a linear policy to a fixed dataset of (observation, action) pairs."""

    checkpoint_format = "robolearn-ppo"
    collects = False
    progress_metric = ("loss", "loss/bc")

    def __init__(self, obs: torch.Tensor, actions: torch.Tensor) -> None:
        self.obs, self.actions = obs, actions
        self.net = nn.Linear(obs.shape[1], actions.shape[1])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.05)

    def act(self, obs):  # pragma: no cover - the Runner never calls it for an offline algorithm
        raise AssertionError("an offline algorithm is not asked to act")

    def process_env_step(self, *args):  # pragma: no cover
        raise AssertionError("an offline algorithm has no environment steps")

    def update(self) -> dict[str, float]:
        loss = (self.net(self.obs) - self.actions).square().mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss/bc": float(loss)}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])

    def deployable(self) -> nn.Module:
        return self.net


def test_an_offline_algorithm_uses_the_same_runner_without_a_task(tmp_path):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(256, 6, generator=g)
    true = torch.randn(6, 2, generator=g)
    bc = BehaviourCloning(obs, obs @ true)
    meta = {"task": "dataset", "obs_dims": {"policy": 6}, "num_actions": 2, "joint_names": []}
    runner = Runner(bc, None, RunnerCfg(max_iterations=150, save_interval=100), tmp_path / "bc",
                    config={"dataset": "synthetic"}, meta=meta,
                    evaluate=lambda policy: {"error": float((policy(obs) - obs @ true).abs().max())})
    summary = runner.learn(progress=False)
    assert summary["iterations"] == 150 and summary["env_steps"] == 0 and "steps_per_s" not in summary
    assert summary["eval"]["error"] < 0.05  # it learned the linear map
    written = json.loads((tmp_path / "bc" / "summary.json").read_text())
    assert written["algorithm"] == "robolearn-ppo" and written["stopped_by"] == "iterations"
    assert load_checkpoint(tmp_path / "bc")["iteration"] == 150
    with pytest.raises(ValueError, match="collects experience: it needs a task"):
        Runner(Recorder(6, 2), None, RunnerCfg(), tmp_path / "x", config={}, meta=meta)
