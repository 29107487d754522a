"""Tasks, storage and PPO follow the task's device, and a step makes no host sync.

Without a GPU: (1) under `torch.set_default_device("meta")` with `device="cpu"`, any tensor created without an
explicit device is a meta tensor and fails at its first use, so building and stepping the GPU-capable tasks and
a training iteration there proves that everything is created on the device asked for; (2) `HostSyncs` counts the
calls that would make the host wait for a GPU (`.item()`, `bool(t)`, boolean-mask indexing, `nonzero`, ...): a
task step on a device-resident backend (MuJoCo Warp on the CPU) has none, and a training iteration's count does
not grow with its number of steps.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from host_syncs import HostSyncs

from robolearn.learn.config import load_train_cfg
from robolearn.learn.train import make_ppo_runner
from robolearn.sim.tasks import make_task

needs_warp = pytest.mark.skipif(importlib.util.find_spec("mujoco_warp") is None,
                                reason="mujoco-warp not installed (pip install -e '.[mjwarp]')")
# Short episodes: resets (time-outs, and falls under random actions) happen within a few steps.
SHORT = {"episode_length_s": 0.2, "randomization": {"push_interval_s": 0.04}}


@pytest.fixture
def meta_default():
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


@pytest.mark.parametrize("name", ["go2-flat", "go2-rough", "go2-nav", "panda-reach"])
def test_tasks_create_every_tensor_on_their_device(name, meta_default):
    overrides = {"go2-rough": {**SHORT, "terrain": {"num_rows": 2, "num_cols": 2}, "max_init_level": 1},
                 "go2-flat": SHORT, "go2-nav": {**SHORT, "layout": {"count": 4}}}.get(name, {"episode_length_s": 0.2})
    task = make_task(name, 3, device="cpu", seed=1, overrides=overrides)
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        for _ in range(15):  # several auto-resets
            obs, reward, cost, terminated, truncated, info = task.step(
                torch.randn(3, task.num_actions, generator=g, device="cpu"))
        assert all(v.device.type == "cpu" and torch.isfinite(v).all() for v in obs.values())
        assert reward.device.type == "cpu" and info["ended"]["mask"].device.type == "cpu"
        assert task.episode_stats()["episodes"] >= 3  # 15 steps of 10-step episodes in 3 envs
    finally:
        task.close()


@pytest.mark.parametrize("algorithm", ["ppo", "ppo-lag"])
def test_a_training_iteration_creates_every_tensor_on_its_device(tmp_path, meta_default, algorithm):
    cfg = load_train_cfg("go2-flat", overrides={
        "algorithm": algorithm, "num_envs": 4, "steps_per_env": 8, "max_iterations": 2, "max_time_s": 0.0,
        "save_interval": 1,
        "task_overrides": SHORT, "eval": {"num_envs": 2}, "ppo": {"minibatches": 2, "epochs": 2}})
    runner = make_ppo_runner(cfg, tmp_path / "run")
    summary = runner.learn(progress=False)
    assert summary["iterations"] == 2 and summary["device"] == "cpu"
    assert summary["final_mean_reward"] is not None  # episodes ended and were counted
    assert all(p.device.type == "cpu" for p in runner.algorithm.policy.parameters())
    assert runner.algorithm.storage.actor_obs.device.type == "cpu"
    if algorithm == "ppo-lag":
        assert runner.algorithm.storage.cost_values.device.type == "cpu"
        assert summary["lagrangian"]["last_episode_cost"] is not None  # episodes ended and moved the multiplier


@needs_warp
def test_task_step_makes_no_host_sync():
    """go2-flat on MuJoCo Warp (device-resident state): observations, rewards, terminations, auto-resets with
    new randomization and commands, pushes and the episode sums, all without a host sync. On the CPU a task skips
    masked work when the mask is empty (`skip_empty_masks`, a free check there); off, as on a GPU."""
    task = make_task("go2-flat", 4, backend="mjwarp", seed=2, overrides=SHORT)
    task.skip_empty_masks = False  # the path a CUDA device takes
    try:
        actions = 0.5 * torch.randn(30, 4, task.num_actions, generator=torch.Generator().manual_seed(1))
        task.step(actions[0])  # first call: Warp captures its graph (no torch work)
        with HostSyncs() as syncs:
            ended = 0
            for a in actions[1:]:
                _, _, _, _, _, info = task.step(a)
                ended = ended + info["ended"]["mask"].sum()
        assert syncs.calls == [], syncs.calls
        assert int(ended) >= 8  # resets did happen inside the counted steps
        stats = task.episode_stats()  # the once-per-iteration read
        assert stats["episodes"] == int(ended) and 0 < stats["episode_length_s"] <= 0.2 + 1e-6
    finally:
        task.close()


def _count_iteration_syncs(tmp_path, steps: int, skip_empty_masks: bool = False,
                           algorithm: str = "ppo") -> tuple[int, list]:
    cfg = load_train_cfg("go2-flat", overrides={
        "algorithm": algorithm, "backend": "mjwarp", "num_envs": 4, "steps_per_env": steps, "max_iterations": 1,
        "max_time_s": 0.0,
        "save_interval": 100, "task_overrides": SHORT, "eval": {"num_envs": 2, "task_overrides": {}},
        "ppo": {"minibatches": 2, "epochs": 2}})
    runner = make_ppo_runner(cfg, tmp_path / f"steps{steps}-{skip_empty_masks}-{algorithm}")
    runner.task.skip_empty_masks = skip_empty_masks  # False: the path a CUDA device takes
    runner.evaluate_fn = None  # the closing evaluation is not part of the training loop
    with HostSyncs() as syncs:
        runner.learn(progress=False)
    return len(syncs.calls), syncs.calls


@needs_warp
def test_training_iteration_syncs_do_not_grow_with_its_steps(tmp_path):
    """A few host syncs per iteration (PPO's adaptive learning rate per minibatch, the logged statistics), none
    per collection step: 6 and 18 steps per env give the same count. With the CPU's shortcut on (the default
    there), the count does grow: the test sees the difference."""
    few, calls = _count_iteration_syncs(tmp_path, 6)
    many, _ = _count_iteration_syncs(tmp_path, 18)
    assert many == few, calls
    # 4 adaptive-lr decisions (one per minibatch), 3 statistics reads, 1 check, and (once per run, on the CPU
    # only) the 2 views Warp makes of its first step's control and sensor buffers
    assert few <= 10, calls
    cpu_few, _ = _count_iteration_syncs(tmp_path, 6, skip_empty_masks=True)
    cpu_many, _ = _count_iteration_syncs(tmp_path, 18, skip_empty_masks=True)
    assert cpu_many > cpu_few > few  # the counter sees per-step syncs when there are some
    # PPO-Lagrangian: one more read per iteration (the ended episodes' cost for the multiplier), none per step
    lag_few, calls = _count_iteration_syncs(tmp_path, 6, algorithm="ppo-lag")
    lag_many, _ = _count_iteration_syncs(tmp_path, 18, algorithm="ppo-lag")
    assert lag_many == lag_few == few + 1, calls


@pytest.mark.parametrize(("user_env", "expected"), [
    ({}, "10000"),  # a short spin: the default
    ({"OMP_WAIT_POLICY": "PASSIVE"}, None),  # the user's policy wins: no spin count is forced on it
    ({"GOMP_SPINCOUNT": "0"}, "0"),
])
def test_importing_robolearn_sets_a_short_openmp_spin_unless_the_user_chose_one(user_env, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | user_env
    out = subprocess.run([sys.executable, "-c", "import os, robolearn; print(os.environ.get('GOMP_SPINCOUNT'))"],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert out == str(expected)
