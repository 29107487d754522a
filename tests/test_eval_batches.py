"""`robolearn eval --backend pybullet` evaluates in bounded batches (issue 20): PyBullet keeps one physics client per
env (~36 MB each for the Panda), so evaluating every episode at once grew memory with the episode count (200
episodes: 7.3 GB). Real PyBullet, a real (untrained) run folder."""

from __future__ import annotations

import pytest

from robolearn.learn.eval_run import MAX_BATCH, evaluate_run

pb = pytest.importorskip("pybullet")


@pytest.fixture(scope="module")
def reach_run(tmp_path_factory):
    from robolearn.learn.config import load_train_cfg
    from robolearn.learn.train import make_ppo_runner

    run = tmp_path_factory.mktemp("runs") / "reach"
    cfg = load_train_cfg("panda-reach", overrides={"num_envs": 4, "steps_per_env": 4,  # short eval episodes
                                                   "eval": {"task_overrides": {"episode_length_s": 0.5}}})
    runner = make_ppo_runner(cfg, run)
    runner.save(run / "checkpoints" / "model.pt")
    runner.close()
    return run


def test_pybullet_eval_runs_in_bounded_batches_with_every_episode(reach_run):
    batch = MAX_BATCH["pybullet"]
    episodes = batch + 2  # one full batch and a partial one
    sizes = []
    report, results = evaluate_run(reach_run, backend="pybullet", episodes=episodes,
                                   on_first_batch=lambda env: sizes.append(env.num_envs))
    assert report["num_envs"] == batch and sizes == [batch], "at most MAX_BATCH clients at once"
    assert report["episodes"] == episodes and len(results) == episodes
    assert [e["env_id"] for e in report["per_episode"]] == list(range(episodes))
    returns = [e["episode_return"] for e in report["per_episode"]]
    assert report["summary"]["mean_return"] == pytest.approx(sum(returns) / episodes)
    assert report["summary"]["episodes"] == episodes
    # The partial batch is batch 1 (seed + 1): the same episodes as evaluating those two on their own.
    tail, _ = evaluate_run(reach_run, backend="pybullet", episodes=2, seed=report["seed"] + 1)
    for ours, alone in zip(report["per_episode"][batch:], tail["per_episode"], strict=True):
        assert ours["env_id"] == alone["env_id"] + batch
        assert ours["episode_return"] == pytest.approx(alone["episode_return"], abs=1e-6)
        assert ours["metrics"] == pytest.approx(alone["metrics"], abs=1e-6)
    # Every batch's clients were disconnected: nothing accumulates across batches.
    assert not any(pb.getConnectionInfo(physicsClientId=i)["isConnected"] for i in range(4 * episodes))

