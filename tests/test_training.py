"""PPO learns, checkpoints round-trip, resume continues (same folder, fresh budget), the latest checkpoint is
found, and a foreign checkpoint is refused."""

from __future__ import annotations

import json

import pytest
import torch

from robolearn.errors import CheckpointError
from robolearn.learn.checkpoint import checkpoint_file, load_checkpoint
from robolearn.learn.config import load_train_cfg
from robolearn.learn.models.actor_critic import EmpiricalNormalizer
from robolearn.learn.runner import Runner
from robolearn.learn.storage import RolloutStorage
from robolearn.learn.train import make_ppo_runner

SMALL = {"num_envs": 128, "steps_per_env": 24, "save_interval": 1000, "max_time_s": 0.0, "eval": {"num_envs": 32}}


def _runner(tmp_path, name: str, iterations: int, task: str = "panda-reach", **extra) -> Runner:
    cfg = load_train_cfg(task, overrides={**SMALL, "max_iterations": iterations, **extra})
    return make_ppo_runner(cfg, tmp_path / name)


def test_ppo_improves_panda_reach(tmp_path):
    # Without the deploy runtime's 1 rad/s target rate limit, which slows the first iterations (what is tested here
    # is that PPO learns; the deploy-grade task is measured by benchmarks/arm_targets.py)
    runner = _runner(tmp_path, "learn", 40, task_overrides={"deploy_targets": False, "action_bounds": "none"})
    before = runner.evaluate_fn(runner.algorithm.deployable())
    summary = runner.learn(progress=False)
    after = summary["eval"]
    assert after["final_distance"] < 0.5 * before["final_distance"], (before, after)
    assert after["mean_return"] > before["mean_return"] + 1.0, (before, after)
    written = json.loads((tmp_path / "learn" / "summary.json").read_text())
    assert written["env_steps"] == 40 * 128 * 24 and written["steps_per_s"] > 0
    assert {"survival", "success", "final_distance"} <= set(written["eval"])
    assert (tmp_path / "learn" / "config.yaml").is_file()
    assert list((tmp_path / "learn" / "tb").glob("events.out.tfevents.*"))


def test_checkpoint_resume_continues_where_it_stopped(tmp_path):
    first = _runner(tmp_path, "a", 2)
    first.learn(progress=False)
    ckpt = load_checkpoint(tmp_path / "a", task="panda-reach")
    assert ckpt["iteration"] == 2 and ckpt["env_steps"] == 2 * 128 * 24
    second = _runner(tmp_path, "a", 3)  # the same folder, a budget of 3 more iterations
    assert second.resume(tmp_path / "a") == tmp_path / "a" / "checkpoints" / "model.pt"
    assert second.iteration == 2
    for key, value in first.algorithm.policy.state_dict().items():
        assert torch.equal(value, second.algorithm.policy.state_dict()[key]), key
    assert second.algorithm.lr == first.algorithm.lr
    summary = second.learn(progress=False)
    assert summary["iterations"] == 5 and summary["iterations_this_run"] == 3
    assert summary["env_steps"] == 5 * 128 * 24
    saved = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert saved == ["model.pt", "model_2.pt", "model_5.pt"]
    assert len(list((tmp_path / "a" / "tb").glob("events.out.tfevents.*"))) == 2  # TensorBoard goes on


def test_latest_or_chosen_checkpoint_of_a_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="has no checkpoints/model.pt or model_<N>.pt"):
        checkpoint_file(run)
    for n in (50, 100, 150):
        (run / "checkpoints" / f"model_{n}.pt").write_bytes(b"")
    assert checkpoint_file(run).name == "model_150.pt"  # a run stopped before writing model.pt
    assert checkpoint_file(run, 100).name == "model_100.pt"
    with pytest.raises(CheckpointError, match=r"model_7.pt \(iterations saved in .*: 50, 100, 150\)"):
        checkpoint_file(run, 7)
    (run / "checkpoints" / "model.pt").write_bytes(b"")
    assert checkpoint_file(run).name == "model.pt"


def test_checkpoint_from_another_task_is_refused(tmp_path):
    _runner(tmp_path, "reach", 1).learn(progress=False)
    go2 = _runner(tmp_path, "go2", 1, task="go2-flat", num_envs=8, eval={"num_envs": 2})
    with pytest.raises(CheckpointError, match="trained on task 'panda-reach', not 'go2-flat'"):
        go2.resume(tmp_path / "reach")
    go2.close()


def test_unreadable_or_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt: not a readable robolearn checkpoint"):
        load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a robolearn checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_normalizer_matches_batch_statistics():
    torch.manual_seed(0)
    data = torch.randn(1000, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([2.0, -1.0, 0.5])
    norm = EmpiricalNormalizer(3)
    for chunk in data.split(128):
        norm.update(chunk)
    torch.testing.assert_close(norm.mean, data.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.var, data.var(0, unbiased=False), rtol=1e-4, atol=1e-5)


def test_gae_matches_a_hand_computed_example():
    s = RolloutStorage(3, 1, 1, 1, 1)
    for reward, value, done in ((1.0, 0.5, 0.0), (0.0, 0.2, 1.0), (2.0, 0.1, 0.0)):
        s.add(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.zeros(1, 1),
              torch.ones(1, 1), torch.tensor([value]), torch.tensor([reward]), torch.tensor([done]))
    gamma, lam, last = 0.9, 0.8, 0.3
    s.compute_gae(torch.tensor([last]), gamma, lam)
    a2 = 2.0 + gamma * last - 0.1
    a1 = 0.0 - 0.2  # episode ended: no bootstrap
    a0 = (1.0 + gamma * 0.2 - 0.5) + gamma * lam * a1
    torch.testing.assert_close(s.returns.flatten(), torch.tensor([a0 + 0.5, a1 + 0.2, a2 + 0.1]))
