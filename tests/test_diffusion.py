"""Diffusion Policy core: training windows, min-max normalization, the DDIM sampler's wiring, the U-Net, a short
training run, and the chunked Policy's receding horizon."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robolearn.errors import ConfigError, DatasetError
from robolearn.learn.diffusion import (
    ChunkWindows,
    DiffusionCfg,
    DiffusionLearner,
    DiffusionModel,
    DiffusionPolicy,
    MinMaxNormalizer,
)
from robolearn.learn.models.diffusion_unet import ConditionalUnet1D


def _model(cfg: DiffusionCfg, obs_dim: int = 3, action_dim: int = 2) -> DiffusionModel:
    obs_norm = MinMaxNormalizer(-np.ones(obs_dim), np.ones(obs_dim), name="observation.state")
    act_norm = MinMaxNormalizer(-2 * np.ones(action_dim), 2 * np.ones(action_dim), name="action", constant_ok=False)
    return DiffusionModel(cfg, obs_dim, action_dim, obs_norm, act_norm)


def test_windows_clamp_to_their_episode() -> None:
    # two episodes: frames 0..3 (values 0..3) and 4..5 (values 10, 11); obs == action == the frame's value
    eps = [(np.arange(4.0)[:, None], np.arange(4.0)[:, None]), (np.array([[10.0], [11.0]]), np.array([[10.0], [11.0]]))]
    w = ChunkWindows(eps, obs_horizon=2, pred_horizon=4)
    assert len(w) == 6
    obs, act, images = w.batch(torch.arange(6))
    assert images is None  # no cameras
    assert obs[:, :, 0].tolist() == [[0, 0], [0, 1], [1, 2], [2, 3], [10, 10], [10, 11]]
    assert act[:, :, 0].tolist() == [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 3], [2, 3, 3, 3], [10, 10, 11, 11],
                                     [10, 11, 11, 11]]


def test_windows_reject_mismatched_episodes() -> None:
    with pytest.raises(ConfigError, match="episode 0 has 3 observations and 2 actions"):
        ChunkWindows([(np.zeros((3, 1)), np.zeros((2, 1)))], 2, 4)
    with pytest.raises(ConfigError, match="no episodes"):
        ChunkWindows([], 2, 4)


def test_minmax_normalizer_is_invertible_and_names_bad_fields() -> None:
    low, high = np.array([-1.0, 0.0, 5.0]), np.array([3.0, 0.5, 5.0])  # the last dimension is constant
    norm = MinMaxNormalizer(low, high, name="observation.state")
    x = torch.tensor([[-1.0, 0.0, 5.0], [3.0, 0.5, 5.0], [1.0, 0.25, 5.0]])
    y = norm(x)
    assert torch.allclose(y[:, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert (y[:, 2] == 0).all()
    assert torch.allclose(norm.inverse(y), x)
    assert norm.constant_dims == [2] and (norm.inverse(torch.ones(1, 3))[:, 2] == 5.0).all()  # held, whatever comes
    with pytest.raises(ConfigError, match="action: every dimension is constant in the data"):
        MinMaxNormalizer(np.ones(2), np.ones(2), name="action", constant_ok=False)
    with pytest.raises(ConfigError, match="action: min/max are not finite"):
        MinMaxNormalizer(np.array([0.0, np.nan]), np.ones(2), name="action")


def test_config_rejects_inconsistent_horizons() -> None:
    with pytest.raises(ConfigError, match="diffusion.execute"):
        DiffusionCfg(obs_horizon=2, pred_horizon=16, execute=16)
    with pytest.raises(ConfigError, match="inference_steps"):
        DiffusionCfg(train_steps=10, inference_steps=20)


def test_unet_shapes_and_horizon_check() -> None:
    net = ConditionalUnet1D(action_dim=7, cond_dim=20, down_dims=(16, 32, 64))
    out = net(torch.randn(5, 16, 7), torch.randint(0, 100, (5,)), torch.randn(5, 20))
    assert out.shape == (5, 16, 7)
    assert net(torch.randn(1, 16, 7), torch.tensor(3), torch.randn(1, 20)).shape == (1, 16, 7)  # a scalar step
    with pytest.raises(ConfigError, match="divisible by 4"):
        net(torch.randn(1, 10, 7), torch.tensor(3), torch.randn(1, 20))


class _Oracle(nn.Module):
    """The exact noise of x_t about a known clean chunk x0 (what a perfect denoiser predicts)."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.x0, self.abar = x0, alphas_cumprod

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        a = self.abar[int(t)]
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


@pytest.mark.parametrize("steps", [1, 10, 100])
def test_ddim_sampler_lands_on_the_clean_chunk_with_a_perfect_denoiser(steps: int) -> None:
    cfg = DiffusionCfg(down_dims=[16, 32, 64])
    model = _model(cfg)
    x0 = torch.rand(1, cfg.pred_horizon, 2) * 1.6 - 0.8  # normalized actions inside [-1, 1]
    model.denoiser = _Oracle(x0, model.ddim.alphas_cumprod)
    out = model.sample(torch.zeros(1, cfg.obs_horizon, 3), steps=steps, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, model.action_norm.inverse(x0), atol=1e-4)


def test_short_training_lowers_the_loss_and_the_ema_follows() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(8):  # actions: a smooth function of the observation
        obs = rng.uniform(-1, 1, size=(40, 3)).astype(np.float32)
        episodes.append((obs, np.stack([np.sin(2 * obs[:, 0]), obs[:, 1] * obs[:, 2]], axis=1) * 1.5))
    cfg = DiffusionCfg(down_dims=[16, 32, 64], batch_size=32, learning_rate=2e-3, warmup_steps=10,
                       total_steps=170)
    model = _model(cfg)
    learner = DiffusionLearner(model, ChunkWindows(episodes, cfg.obs_horizon, cfg.pred_horizon),
                               generator=torch.Generator().manual_seed(1))
    before = np.mean([float(learner.step()) for _ in range(10)])
    for _ in range(120):  # after / before is 0.26-0.31 over seeds 0-2
        learner.step()
    after = np.mean([float(learner.step()) for _ in range(20)])
    assert after < 0.5 * before, (before, after)
    ema = dict(learner.ema_model.denoiser.named_parameters())
    moved = [(ema[k] - p0).abs().max().item() for k, p0 in _model(cfg).denoiser.named_parameters()]
    assert max(moved) > 0  # the EMA copy trained, not the initial weights
    assert learner.schedule.get_last_lr()[0] < cfg.learning_rate  # the cosine decay is running


def test_checkpoint_round_trip_continues_identically(tmp_path) -> None:
    episodes = [(np.random.default_rng(0).uniform(-1, 1, (30, 3)), np.random.default_rng(1).uniform(-2, 2, (30, 2)))]
    cfg = DiffusionCfg(down_dims=[16, 32, 64], batch_size=16, warmup_steps=2, total_steps=50)

    def learner() -> DiffusionLearner:
        torch.manual_seed(0)
        return DiffusionLearner(_model(cfg), ChunkWindows(episodes, 2, 16), generator=torch.Generator().manual_seed(3))

    a = learner()
    for _ in range(3):
        a.step()
    torch.save(a.state_dict(), tmp_path / "model.pt")
    b = learner()
    b.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=False))
    assert [float(a.step()) for _ in range(2)] == [float(b.step()) for _ in range(2)]


def test_policy_plans_every_execute_steps_from_the_current_frame() -> None:
    cfg = DiffusionCfg(down_dims=[16, 32, 64], pred_horizon=16, obs_horizon=2, execute=8)
    policy = DiffusionPolicy(_model(cfg))
    assert policy.chunk.horizon == 15 and policy.history == 2
    actions = [policy.act(torch.full((3,), float(i) / 20)) for i in range(17)]
    assert policy.model_calls == 3  # calls 0, 8 and 16
    assert all(a.shape == (2,) for a in actions)
    policy.reset()
    policy.act(torch.zeros(3))
    assert policy.model_calls == 4  # a new episode plans at once
    with pytest.raises(ConfigError, match="expected an observation frame of 3 values"):
        policy.act(torch.zeros(4))


# -- demonstrations from a recorded dataset -------------------------------------------------------------------------

def _copy(root, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def test_demonstrations_read_a_recorded_dataset(pushes) -> None:
    from robolearn.learn.demonstrations import load_demonstrations

    demos = load_demonstrations(pushes, task="panda-push",
                                obs_keys=["observation.state", "observation.ee_pos", "observation.environment_state"])
    assert len(demos.episodes) == 2 and demos.task == "panda-push"
    assert demos.obs_dim == 9 + 3 + 10  # 9 joints (arm, fingers), end effector, block pose and goal side by side
    obs, act = demos.episodes[0]
    assert obs.shape[0] == act.shape[0] > 10 and demos.action_dim == act.shape[1] == 4
    assert demos.action_norm.constant_dims == [3]  # the expert never closes the gripper on a push: held at 1
    for o, a in demos.episodes:  # the dataset's own min/max put every frame inside [-1, 1]
        assert demos.obs_norm(torch.from_numpy(o)).abs().max() <= 1 + 1e-5
        assert demos.action_norm(torch.from_numpy(a)).abs().max() <= 1 + 1e-5
    windows = ChunkWindows(demos.episodes, 2, 16)
    assert len(windows) == demos.frames


def test_an_observation_key_can_take_named_columns_of_a_feature(pushes) -> None:
    """`feature[name,...]` takes those columns (by the feature's names, in that order) in training, with the matching
    part of the dataset's min/max, and when acting (observation_frames); an unknown column or an empty selection
    is a one-line error naming the key."""
    from robolearn.learn.demonstrations import load_demonstrations
    from robolearn.learn.diffusion_eval import observation_frames
    from robolearn.sim.tasks import make_task

    whole = ["observation.state", "observation.environment_state"]
    goal = ["observation.state", "observation.environment_state[goal_y,goal_x]"]
    full, picked = (load_demonstrations(pushes, task="panda-push", obs_keys=k) for k in (whole, goal))
    assert picked.obs_dim == 9 + 2
    for (o_full, a_full), (o_picked, a_picked) in zip(full.episodes, picked.episodes, strict=True):
        assert np.array_equal(o_picked, np.concatenate([o_full[:, :9], o_full[:, [17, 16]]], axis=1))
        assert np.array_equal(a_picked, a_full)
    assert torch.equal(picked.obs_norm.low, full.obs_norm.low[[*range(9), 17, 16]])
    assert torch.equal(picked.obs_norm.span, full.obs_norm.span[[*range(9), 17, 16]])
    task = make_task("panda-push", 2, seed=3)
    task.reset()
    frames = observation_frames(task, goal)
    assert torch.equal(frames[:, 9:], task.goal[:, [1, 0]]) and torch.equal(frames[:, :9], task.joint_pos)
    with pytest.raises(ConfigError, match=r"task panda-push: observation key 'observation.environment_state"
                                          r"\[goal_w\]': observation.environment_state has no column 'goal_w'"):
        observation_frames(task, ["observation.environment_state[goal_w]"])
    task.close()
    with pytest.raises(DatasetError, match=r"info.json: observation key 'observation.ee_pos\[x,q\]': "
                                           r"observation.ee_pos has no column 'q' \(its columns: x, y, z\)"):
        load_demonstrations(pushes, obs_keys=["observation.ee_pos[x,q]"])
    with pytest.raises(DatasetError, match=r"observation key 'observation.ee_pos\[\]': expected FEATURE or "):
        load_demonstrations(pushes, obs_keys=["observation.ee_pos[]"])
    with pytest.raises(DatasetError, match="no feature 'observation.joints'"):
        load_demonstrations(pushes, obs_keys=["observation.joints[x]"])


def test_recorded_motions_become_targets_that_replay_the_episode_exactly(pushes) -> None:
    """action_space ee_target (a position target per step, what Diffusion Policy learns best): the recorded expert
    motions turned into targets and executed from the same first frame move the commanded end effector exactly as
    the motions did, and the demonstrations normalize the targets by their own range."""
    from robolearn.data.lerobot_reader import DatasetReader
    from robolearn.learn.demonstrations import load_demonstrations
    from robolearn.sim.tasks import make_task

    keys = ["observation.state", "observation.ee_pos", "observation.environment_state"]
    motions = load_demonstrations(pushes, task="panda-push", obs_keys=keys)
    targets_task = make_task("panda-push", 1, overrides={"action_space": "ee_target"})
    demos = load_demonstrations(pushes, task="panda-push", obs_keys=keys, ee_targets=targets_task.cfg)
    assert targets_task.action_names() == ("x", "y", "z", "grip")
    frame = DatasetReader(pushes).episode(0)
    first = {k: np.asarray(frame[k][0]) for k in keys}
    (_, moved), (_, aimed) = motions.episodes[0], demos.episodes[0]
    assert np.abs(aimed[:, 3] - moved[:, 3]).max() == 0  # the grip is unchanged
    assert np.abs(np.diff(aimed[:, :3], axis=0)).max() <= targets_task.cfg.max_ee_step + 1e-6
    for _, a in demos.episodes:
        assert demos.action_norm(torch.from_numpy(a)).abs().max() <= 1 + 1e-5
    motion_task = make_task("panda-push", 1)
    for task in (motion_task, targets_task):
        task.reset()
        task.restart(*task.scene_from_frame(first))
    for t in range(len(moved)):
        motion_task.step(torch.from_numpy(moved[t : t + 1]))
        targets_task.step(torch.from_numpy(aimed[t : t + 1]))
        assert torch.allclose(motion_task.ee_target, targets_task.ee_target, atol=1e-5), t
        assert torch.allclose(targets_task.ee_target[0], torch.from_numpy(aimed[t, :3]), atol=1e-5), t
    with pytest.raises(DatasetError, match="not end-effector motions"):
        load_demonstrations(pushes, task="panda-push", obs_keys=keys, action_key="observation.ee_pos",
                            ee_targets=targets_task.cfg)
    for task in (motion_task, targets_task):
        task.close()


def test_unfit_datasets_give_one_line_errors(pushes, tmp_path) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from robolearn.errors import DatasetError
    from robolearn.learn.demonstrations import load_demonstrations

    with pytest.raises(DatasetError, match=r"robolearn.json: episodes recorded on \['panda-push'\], not on "
                                           r"'panda-lift'"):
        load_demonstrations(pushes, task="panda-lift")
    with pytest.raises(DatasetError, match="no feature 'observation.joints'"):
        load_demonstrations(pushes, obs_keys=["observation.state", "observation.joints"])

    constant = _copy(pushes, tmp_path / "c")
    stats_path = constant / "meta" / "stats.json"
    stats = json.loads(stats_path.read_text())
    stats["action"]["max"] = stats["action"]["min"]
    stats_path.write_text(json.dumps(stats))
    with pytest.raises(DatasetError, match="stats.json: action: every dimension is constant"):
        load_demonstrations(constant)

    nan = _copy(pushes, tmp_path / "n")
    data = next(f for f in (nan / "data").rglob("*.parquet")
                if 0 in pq.read_table(f).column("episode_index").to_pylist())
    table = pq.read_table(data)
    actions = table.column("action").to_pylist()
    row = [(e, t) for e, t in zip(table.column("episode_index").to_pylist(), table.column("frame_index").to_pylist(),
                                  strict=True)].index((0, 3))
    actions[row][0] = float("nan")
    table = table.set_column(table.schema.get_field_index("action"), "action",
                             pa.array(actions, type=table.schema.field("action").type))
    pq.write_table(table, data)
    with pytest.raises(DatasetError, match=r"action of episode 0 is not finite \(frame 3, dimension 0\)"):
        load_demonstrations(nan)


# -- sampling modes ---------------------------------------------------------------------------------------------

class _Untrained(nn.Module):
    """A denoiser that predicts no noise at all: DDIM then keeps its first clean estimate, x_t / sqrt(abar_t)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_warm_start_refines_the_previous_chunk_shifted_by_the_executed_actions() -> None:
    from robolearn.learn.diffusion import ChunkPlanner

    cfg = DiffusionCfg(down_dims=[16, 32, 64], sampler="warm", inference_steps=10, warm_steps=3, execute=8)
    model = _model(cfg)
    model.denoiser = _Untrained()
    planner = ChunkPlanner(model, 2, generator=torch.Generator().manual_seed(5))
    frames = torch.zeros(2, cfg.obs_horizon, 3)
    planner.plan(frames)  # the first plan is cold
    previous = torch.linspace(-0.8, 0.8, cfg.pred_horizon)[None, :, None].expand(2, -1, 2).clone()
    planner._last = previous
    state = planner.generator.get_state()
    out = planner.plan(frames)  # raw actions from the current frame on
    # what it must be: the shifted chunk (its tail repeats the last action), noised with the planner's next draw
    # to the level of the last 3 of 10 DDIM steps, and (untrained denoiser) its clean estimate kept: clip(S + c e)
    shifted = torch.cat((previous[:, 8:], previous[:, -1:].expand(-1, 8, -1)), dim=1)
    e = torch.randn(shifted.shape, generator=torch.Generator().manual_seed(0).set_state(state))
    model.ddim.set_timesteps(10)
    abar = model.ddim.alphas_cumprod[model.ddim.timesteps[-3]]
    expected = (shifted + ((1 - abar) / abar).sqrt() * e).clamp(-1, 1)
    assert torch.allclose(planner._last, expected, atol=1e-5)
    assert torch.allclose(out, model.action_norm.inverse(expected)[:, cfg.obs_horizon - 1:], atol=1e-5)
    assert ((1 - abar) / abar).sqrt() < 0.5  # a light re-noising: the plan stays near the shifted chunk
    planner.reset(torch.tensor([True, False]))  # env 0 starts a new episode: it plans cold, env 1 warm
    planner._last = previous
    planner.plan(frames)
    assert (planner._last[1] - shifted[1]).abs().max() < 1.5 and planner._last[0].abs().max() > 0  # both planned
    with pytest.raises(ConfigError, match="sampler must be one of ddim, ddpm, warm"):
        ChunkPlanner(model, 1, sampler="ddpn")
    with pytest.raises(ConfigError, match="warm_steps must be in"):
        DiffusionCfg(inference_steps=4, warm_steps=5)
    # the tail of a shorter schedule: 3 steps of a 5-step DDIM schedule start from level 40 (10 steps: level 20)
    cfg5 = DiffusionCfg(down_dims=[16, 32, 64], sampler="warm", inference_steps=10, warm_steps=3, execute=8,
                        warm_schedule_steps=5)
    model5 = _model(cfg5)
    model5.denoiser = _Untrained()
    planner = ChunkPlanner(model5, 2, generator=torch.Generator().manual_seed(5))
    planner.plan(frames)
    planner._last = previous
    state = planner.generator.get_state()
    planner.plan(frames)
    e = torch.randn(shifted.shape, generator=torch.Generator().manual_seed(0).set_state(state))
    abar40 = model5.ddim.alphas_cumprod[40]
    assert torch.allclose(planner._last, (shifted + ((1 - abar40) / abar40).sqrt() * e).clamp(-1, 1), atol=1e-5)
    with pytest.raises(ConfigError, match=r"warm_steps must be in \[1, 2\]"):
        DiffusionCfg(warm_schedule_steps=2, warm_steps=3)


def test_ddpm_sampler_runs_every_training_step_and_lands_on_the_clean_chunk() -> None:
    cfg = DiffusionCfg(down_dims=[16, 32, 64], train_steps=20, inference_steps=5)
    model = _model(cfg)
    x0 = torch.rand(1, cfg.pred_horizon, 2) * 1.6 - 0.8
    calls = []

    class Counting(_Oracle):
        def forward(self, x, t, cond):
            calls.append(int(t))
            return super().forward(x, t, cond)

    model.denoiser = Counting(x0, model.ddpm.alphas_cumprod)
    out = model.denoise(torch.zeros(1, cfg.obs_horizon, 3), sampler="ddpm", generator=torch.Generator().manual_seed(0))
    assert calls == list(range(19, -1, -1))
    assert torch.allclose(out, x0, atol=1e-3)


# -- the command line: train, resume, evaluate ------------------------------------------------------------------

def test_cli_trains_resumes_and_evaluates_a_diffusion_run(pushes, tmp_path) -> None:
    """`robolearn train panda-push --algo diffusion --dataset D`, `--resume`, then `robolearn eval RUN --sampler warm`
    (video included), as a user runs them; bad input is a one-line error."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True,
                              env=env, timeout=300, cwd=root, stdin=subprocess.DEVNULL)

    small = ["--set", "steps_per_iteration=3", "--set", "diffusion.down_dims=[16,32,64]", "--set",
             "diffusion.batch_size=16", "--set", "eval.episodes=2", "--set", "task_overrides.episode_length_s=1.5"]
    out = cli("train", "panda-push", "--algo", "diffusion", "--dataset", str(pushes), "--iterations", "2",
              "--runs-dir", str(tmp_path), "--name", "dp", "--no-progress", *small)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "dp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["algorithm"] == "robolearn-diffusion" and summary["gradient_steps"] == 6 and summary["demos"] == 2
    ev = summary["eval"]
    assert ev["episodes"] == 2 and ev["sampler"] == "ddim" and ev["mean_length_s"] == pytest.approx(1.5, abs=0.05)
    assert ev["success_ci95"][0] <= ev["success"] <= ev["success_ci95"][1] and ev["ms_per_chunk_torch"] > 0
    assert "ms_per_chunk" not in ev  # onnxruntime latency (a 5 s export) is robolearn eval's
    assert (run / "checkpoints" / "model_2.pt").is_file() and (run / "tb").is_dir()

    out = cli("train", "panda-push", "--resume", str(run), "--iterations", "1", "--no-progress")
    assert out.returncode == 0, out.stderr
    ckpt = torch.load(run / "checkpoints" / "model.pt", weights_only=False)
    assert ckpt["format"] == "robolearn-diffusion" and ckpt["iteration"] == 3 and ckpt["steps"] == 9

    out = cli("eval", str(run), "--episodes", "3", "--sampler", "warm", "--execute", "3", "--warm-steps", "2",
              "--video", str(tmp_path / "v" / "ep.mp4"))
    assert out.returncode == 0, out.stderr
    report = json.loads((run / "eval_mujoco_warm_execute3_warm2.json").read_text())  # the run's: execute 4
    assert report["summary"]["sampler"] == "warm" and len(report["per_episode"]) == 3
    assert report["summary"]["execute"] == 3 and report["summary"]["denoising_steps"] == 2
    assert report["summary"]["ms_per_chunk"] > 0
    assert (tmp_path / "v" / "ep.mp4").stat().st_size > 1000

    from cli_batch import run_cli_batch

    bad = [
        (("train", "panda-push", "--algo", "diffusion", "--runs-dir", str(tmp_path)),
         "give the dataset with --dataset"),
        (("train", "panda-push", "--algo", "diffusion", "--dataset", str(pushes), "--num-envs", "8"),
         "--num-envs: diffusion trains offline"),
        (("train", "panda-lift", "--algo", "diffusion", "--dataset", str(pushes), "--runs-dir", str(tmp_path)),
         "episodes recorded on ['panda-push'], not on 'panda-lift'"),
        (("eval", str(run), "--sampler", "fast", "--episodes", "1"), "sampler must be one of ddim, ddpm, warm"),
        (("eval", str(run), "--execute", "16", "--episodes", "1"), "diffusion.execute must be in [1, "
                                                                    "pred_horizon - obs_horizon + 1] = [1, 5]"),
        (("play", str(run)), "a diffusion policy (robolearn train --algo diffusion, or its DSRL finetune)"),
    ]
    for (args, message), out in zip(bad, run_cli_batch([args for args, _ in bad]), strict=True):
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_onnx_denoiser_matches_torch_and_plans_the_same_chunks() -> None:
    from robolearn.learn.diffusion import ChunkPlanner, OnnxDenoiser

    cfg = DiffusionCfg(down_dims=[16, 32, 64], sampler="warm")
    model = _model(cfg).eval()
    onnx = OnnxDenoiser(model)
    for batch in (1, 3):
        x, cond = torch.randn(batch, 16, 2), torch.randn(batch, cfg.obs_horizon * 3)
        assert torch.allclose(onnx(x, torch.tensor(7), cond), model.denoiser(x, torch.tensor(7), cond), atol=1e-5)
    frames = torch.randn(2, cfg.obs_horizon, 3)
    a = ChunkPlanner(model, 2, generator=torch.Generator().manual_seed(1))
    b = ChunkPlanner(model, 2, generator=torch.Generator().manual_seed(1), denoiser=onnx)
    for _ in range(2):  # a cold plan, then a warm one
        assert torch.allclose(a.plan(frames), b.plan(frames), atol=1e-4)


# -- DSRL: SAC over the diffusion policy's initial noise ---------------------------------------------------------

def test_sac_learns_the_noise_that_a_reward_asks_for() -> None:
    """One-step episodes, reward -|w - target(obs)|^2 with a target inside the box: SAC's deterministic noise
    (the actor's mean) ends near the target, from an error of about its size."""
    from robolearn.learn.dsrl import SAC, DSRLCfg

    torch.manual_seed(0)
    n, obs_dim, act_dim = 64, 2, 3
    mix = torch.tensor([[0.9, -0.5, 0.3], [0.2, 0.7, -0.8]])

    def target(obs: torch.Tensor) -> torch.Tensor:
        return obs @ mix

    cfg = DSRLCfg(bound=1.5, hidden=[64, 64], batch_size=128, random_steps=256, gradient_steps=16,
                  learning_rate=1e-3, gamma=0.0)
    sac = SAC(cfg, obs_dim, act_dim, n, "cpu")
    probe = torch.rand(256, obs_dim) * 2 - 1
    before = (sac.actor(probe) - target(probe)).abs().mean().item()
    done, not_done = torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    for _ in range(40):  # after: 0.035-0.048 over seeds 0-2
        obs = torch.rand(n, obs_dim) * 2 - 1
        with torch.inference_mode():
            w = sac.act({"policy": obs})
            sac.process_env_step({"policy": torch.rand(n, obs_dim)}, -((w - target(obs)) ** 2).sum(-1),
                                 torch.zeros(n), done, not_done, {})
        stats = sac.update()
    after = (sac.actor(probe) - target(probe)).abs().mean().item()
    assert before > 0.4 and after < 0.15, (before, after)
    assert stats["dsrl/buffer"] == 40 * n and sac.gradient_steps_done == 16 * (40 - 256 // n + 1)


def test_noise_window_steers_only_the_executed_positions_and_warmup_draws_the_prior() -> None:
    """steer=executed: the actor's 2 x 3 numbers land at chunk positions [1, 3) of the 5 x 3 noise, the rest is
    the prior's mode (0); a window outside the chunk is a config error. Before `random_steps` the noise is the
    prior's N(0, 1), clipped to the box."""
    from robolearn.errors import ConfigError
    from robolearn.learn.dsrl import SAC, DSRLCfg, NoiseWindow

    window = NoiseWindow(5, 3, 1, 2)
    w = torch.arange(1, 13, dtype=torch.float32).view(2, 6)
    full = window(w).view(2, 5, 3)
    assert window.dims == 6 and torch.equal(full[:, 1:3].flatten(1), w)
    assert not full[:, 0].any() and not full[:, 3:].any()
    assert torch.equal(NoiseWindow(5, 3, 0, 5)(torch.ones(2, 15)), torch.ones(2, 15))
    with pytest.raises(ConfigError, match="outside the chunk"):
        NoiseWindow(5, 3, 4, 2)
    with pytest.raises(ConfigError, match="dsrl.steer"):
        DSRLCfg(steer="all")

    torch.manual_seed(0)
    sac = SAC(DSRLCfg(bound=1.5, random_steps=10_000), 4, 64, 256, "cpu")
    noise = sac.act({"policy": torch.zeros(256, 4)})
    assert noise.abs().max() <= 1.5 and (noise.abs() == 1.5).float().mean() > 0.1  # clipped tails: P(|z|>1.5)=0.13
    assert abs(noise.mean()) < 0.02 and 0.85 < noise.std() < 0.92  # N(0, 1) clipped at 1.5 has std 0.88
    uniform = SAC(DSRLCfg(bound=1.5, random_steps=10_000, warmup="uniform"), 4, 64, 256, "cpu")
    u = uniform.act({"policy": torch.zeros(256, 4)})
    assert u.abs().max() < 1.5 and (u.abs() < 0.5).float().mean() < 0.36  # uniform: 1/3 within 0.5; prior: 0.38


def test_sac_n_step_targets_follow_each_env_and_stop_at_its_episode_end() -> None:
    """2 envs, 4 steps, n_step 3, gamma 0.5: env 0 ends its episode at step 1, env 1 runs on. Each row's return,
    bootstrap observation and discount, read back by the row's observation (env, step)."""
    from robolearn.learn.dsrl import SAC, DSRLCfg

    sac = SAC(DSRLCfg(n_step=3, gamma=0.5, batch_size=512, random_steps=0), 2, 1, 2, "cpu")
    rewards = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    for step in range(4):
        obs = {"policy": torch.tensor([[0.0, step], [1.0, step]])}
        sac.act(obs)
        nxt = {"policy": torch.tensor([[0.0, step + 0.5], [1.0, step + 0.5]])}
        ended = torch.tensor([step == 1, False])
        sac.process_env_step(nxt, rewards[step], torch.zeros(2), ended, torch.zeros(2, dtype=torch.bool), {})
    torch.manual_seed(0)
    b = sac._sample(8)
    expected = {(0, 0): (1 + 0.5 * 2, 0.0, 1.5), (0, 1): (2.0, 0.0, 1.5), (0, 2): (3 + 0.5 * 4, 0.25, 3.5),
                (0, 3): (4.0, 0.5, 3.5), (1, 0): (10 + 10 + 7.5, 0.125, 2.5), (1, 1): (20 + 15 + 10, 0.125, 3.5),
                (1, 2): (30 + 20, 0.25, 3.5), (1, 3): (40.0, 0.5, 3.5)}
    seen = set()
    for row in range(512):
        env, step = (int(v) for v in b["obs"][row])
        ret, discount, next_step = expected[(env, step)]
        assert (b["rew"][row].item(), b["discount"][row].item()) == (ret, discount), (env, step)
        assert b["next"][row].tolist() == [env, next_step]
        seen.add((env, step))
    assert seen == set(expected)


def test_sparse_dsrl_reward_ends_the_rl_episode_on_the_chunk_that_reaches_the_goal() -> None:
    """reward=success on panda-push: the env whose block starts on its goal gets 0 and a terminal transition, the
    other -1 and none; the simulated episode runs on (its step counter keeps counting)."""
    from robolearn.learn.diffusion_eval import observation_frames
    from robolearn.learn.dsrl import NoiseSteeredTask, NoiseWindow
    from robolearn.sim.tasks import make_task

    task = make_task("panda-push", 2, seed=0)
    try:
        keys = ["observation.state", "observation.ee_pos", "observation.environment_state"]
        task.reset()
        obs_dim = observation_frames(task, keys).shape[1]
        model = _model(DiffusionCfg(down_dims=[8, 16], obs_horizon=2, pred_horizon=8, execute=2), obs_dim, 4)
        steered = NoiseSteeredTask(task, model, keys, NoiseWindow.for_model(model, "executed"), reward="success")
        assert steered.num_actions == 2 * 4
        joint_pos, block, goal = (torch.cat(x) for x in zip(*(task.scene(e) for e in range(2)), strict=True))
        goal[0, :2] = block[0, :2]  # env 0: the block is on its goal
        goal[1, :2] = block[1, :2] + torch.tensor([0.15, 0.0])
        task.restart(joint_pos, block, goal)
        steered._fill()
        steps = task.episode_step.clone()
        _, reward, _, terminated, truncated, _ = steered.step(torch.zeros(2, steered.num_actions))
        assert reward.tolist() == [0.0, -1.0] and terminated.tolist() == [True, False] and not truncated.any()
        assert (task.episode_step == steps + 2).all()
    finally:
        task.close()


def test_dsrl_finetune_leaves_the_diffusion_weights_unchanged_and_evaluates(pushes, tmp_path) -> None:
    """`robolearn finetune RUN --method dsrl` over a (tiny) diffusion run: the base checkpoint and the frozen copy
    in the DSRL checkpoint are bit for bit the diffusion weights; the run resumes; `robolearn eval` runs it."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from robolearn.learn.diffusion_run import load_diffusion_cfg, make_diffusion_runner
    from robolearn.learn.dsrl_run import load_dsrl, load_dsrl_cfg, make_dsrl_runner

    small = {"steps_per_iteration": 2, "max_iterations": 1, "diffusion": {"down_dims": [16, 32, 64], "batch_size": 8},
             "eval": {"episodes": 1}, "task_overrides": {"episode_length_s": 1.0}}
    base = make_diffusion_runner(load_diffusion_cfg("panda-push", overrides={**small, "dataset": str(pushes)}),
                                 tmp_path / "base", log_interval=0)
    base.learn(progress=False)
    base.close()
    base_file = tmp_path / "base" / "checkpoints" / "model.pt"
    weights = {k: v.clone() for k, v in torch.load(base_file, weights_only=False)["ema_model"].items()}

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True,
                              env=env, timeout=300, cwd=root, stdin=subprocess.DEVNULL)

    out = cli("finetune", str(tmp_path / "base"), "--num-envs", "4", "--iterations", "3", "--runs-dir",
              str(tmp_path), "--name", "steer", "--no-progress", "--set", "steps_per_env=2", "--set",
              "dsrl.random_steps=8", "--set", "dsrl.batch_size=8", "--set", "dsrl.gradient_steps=2", "--set",
              "dsrl.hidden=[32,32]", "--set", "eval.episodes=2")
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "steer" / "summary.json").read_text())
    assert summary["algorithm"] == "robolearn-dsrl" and summary["transitions"] == 3 * 4 * 2
    assert summary["sim_steps"] == 3 * 4 * 2 * 4  # panda-push.yaml: 4 actions executed per chunk
    assert summary["gradient_steps"] == 3 * 2 and summary["eval"]["episodes"] == 2  # updates from iteration 1
    ckpt = torch.load(tmp_path / "steer" / "checkpoints" / "model.pt", weights_only=False)
    for k, v in weights.items():  # the base run's file and the frozen copy: unchanged, bit for bit
        assert torch.equal(torch.load(base_file, weights_only=False)["ema_model"][k], v)
        assert torch.equal(ckpt["base"]["ema_model"][k], v), k

    # resume in process: the actor's weights carry over, the buffer refills with the actor's own noise
    cfg = load_dsrl_cfg(tmp_path / "base", {"num_envs": 4, "steps_per_env": 2, "max_iterations": 1,
                                            "dsrl": {"batch_size": 8, "gradient_steps": 2, "hidden": [32, 32]},
                                            "eval": {"episodes": 1}})
    runner = make_dsrl_runner(cfg, tmp_path / "steer", log_interval=0)
    runner.resume(tmp_path / "steer")
    assert runner.iteration == 3 and runner.algorithm.transitions == 24
    actor = {k: v.clone() for k, v in runner.algorithm.actor.state_dict().items()}
    assert all(torch.equal(actor[k], v) for k, v in ckpt["actor"].items())
    runner.close()

    out = cli("eval", str(tmp_path / "steer"), "--episodes", "2")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "steer" / "eval_mujoco.json").read_text())
    assert report["policy"] == "dsrl" and report["summary"]["episodes"] == 2
    _, _, model, _ = load_dsrl(ckpt, "model.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


# -- image-based policies -----------------------------------------------------------------------------------------

def test_image_encoder_crops_randomly_in_training_and_centered_when_acting() -> None:
    from robolearn.learn.models.image_encoder import ImageEncoder, resize_frames

    enc = ImageEncoder(crop=(40, 52), channels=(8, 16, 16, 32), keypoints=8, feature_dim=16)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in enc.modules())  # GroupNorm: no batch statistics
    images = torch.randint(0, 256, (4, 2, 3, 48, 64), dtype=torch.uint8)
    enc.eval()
    a, b = enc(images), enc(images)
    assert a.shape == (4, 2, 16) and torch.equal(a, b)
    flat = images.reshape(-1, 3, 48, 64)
    assert torch.equal(enc._crop(flat), flat[..., 4:44, 6:58])  # centered when acting
    torch.manual_seed(0)
    enc.train()
    crops = [enc._crop(flat) for _ in range(2)]
    assert crops[0].shape == (8, 3, 40, 52) and not torch.equal(*crops)  # a new random crop per call
    windows = flat[0].unfold(1, 40, 1).unfold(2, 52, 1).permute(1, 2, 0, 3, 4)  # every 40 x 52 window
    assert torch.all(windows == crops[0][0], dim=(2, 3, 4)).any()  # a crop of the image, not a resample
    (enc(images) ** 2).sum().backward()
    assert enc.stem[0].weight.grad.abs().sum() > 0  # through the spatial softmax (a 3 x 4 map) to the stem
    frames = np.zeros((2, 240, 320, 3), np.uint8)
    frames[:, :120, :160] = 200  # the top-left quarter
    small = resize_frames(frames, (24, 32))
    assert small.shape == (2, 3, 24, 32) and small.dtype == torch.uint8
    assert int(small[0, 0, 5, 5]) == 200 and int(small[0, 0, 20, 30]) == 0


def test_short_image_training_lowers_the_loss_and_the_encoder_learns() -> None:
    """Actions given only by where a bright square is in the image: the loss falls and the EMA encoder moves."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    episodes, images = [], []
    for _ in range(6):
        pos = rng.uniform(0.0, 1.0, size=(30, 2)).astype(np.float32)
        frames = np.zeros((30, 1, 3, 32, 32), np.uint8)
        for t, (x, y) in enumerate(pos):
            r, c = int(4 + y * 20), int(4 + x * 20)
            frames[t, 0, :, r : r + 6, c : c + 6] = 255
        episodes.append((np.zeros((30, 1), np.float32), pos * 2.0 - 1.0))
        images.append(frames)
    cfg = DiffusionCfg(down_dims=[16, 32, 64], batch_size=16, learning_rate=2e-3, warmup_steps=10, total_steps=200,
                       image_size=[32, 32], crop=[30, 30], encoder_channels=[8, 16, 16, 32], keypoints=8,
                       image_features=16)
    model = DiffusionModel(cfg, 1, 2, MinMaxNormalizer(np.zeros(1), np.zeros(1), name="o"),
                           MinMaxNormalizer(-np.ones(2), np.ones(2), name="a"), cameras=1)
    initial = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    learner = DiffusionLearner(model, ChunkWindows(episodes, cfg.obs_horizon, cfg.pred_horizon, images=images),
                               generator=torch.Generator().manual_seed(1))
    before = np.mean([float(learner.step()) for _ in range(10)])
    for _ in range(120):
        learner.step()
    after = np.mean([float(learner.step()) for _ in range(20)])
    assert after < 0.5 * before, (before, after)
    moved = max((learner.ema_model.encoder.state_dict()[k] - v).abs().max().item() for k, v in initial.items()
                if v.is_floating_point())
    assert moved > 0  # the encoder is in the optimizer and the EMA
    frames = torch.zeros(2, cfg.obs_horizon, 1)
    with pytest.raises(ConfigError, match="sees 1 camera"):
        learner.ema_model.sample(frames)
    shot = torch.from_numpy(np.stack([images[0][:2], images[0][1:3]]))
    assert learner.ema_model.sample(frames, images=shot).shape == (2, cfg.pred_horizon, 2)


def test_acting_cameras_render_what_the_demonstrations_recorded(pushes) -> None:
    """The evaluation's rendered, resized camera at a recorded episode's first state is the recorded (decoded,
    resized) frame, up to video compression."""
    from robolearn.data.lerobot_reader import DatasetReader
    from robolearn.learn.demonstrations import load_demonstrations
    from robolearn.learn.diffusion_eval import CameraFrames
    from robolearn.sim.tasks import make_task

    demos = load_demonstrations(pushes, task="panda-push", obs_keys=["observation.state"],
                                image_keys=["observation.images.front"], image_size=(72, 96))
    assert demos.images is not None and demos.images[0].shape[1:] == (1, 3, 72, 96)
    assert [len(x) for x in demos.images] == [len(o) for o, _ in demos.episodes]
    reader = DatasetReader(pushes)
    task = make_task("panda-push", 1, seed=0)
    cameras = CameraFrames(task, ["observation.images.front"], (72, 96))
    try:
        first = {k: v[0] for k, v in reader.episode(0).items()}
        task.restart(*task.scene_from_frame(first))
        rendered = cameras()[0].float()
        recorded = torch.from_numpy(demos.images[0][0]).float()
        assert (rendered - recorded).abs().mean() < 6.0, (rendered - recorded).abs().mean()
        assert (rendered - torch.from_numpy(demos.images[1][0]).float()).abs().mean() > \
            (rendered - recorded).abs().mean()  # another episode's scene looks different
    finally:
        cameras.close()
        task.close()
    from robolearn.errors import DatasetError

    with pytest.raises(DatasetError, match="image key 'observation.state' is a float32 feature, not a video"):
        load_demonstrations(pushes, obs_keys=["observation.state"], image_keys=["observation.state"])
