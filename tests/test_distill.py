"""Teacher-student distillation on go2-rough: student shapes and gradients, a frozen teacher, the action loss
going down, the student's bundle (history in the manifest), held-out randomization, and clear errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from robolearn.errors import CheckpointError, ConfigError
from robolearn.learn.checkpoint import load_checkpoint, load_policy
from robolearn.learn.config import load_train_cfg
from robolearn.learn.distillation import load_distill_cfg, make_distillation_runner
from robolearn.learn.models.actor_critic import ActorCritic, TeacherActorCritic
from robolearn.learn.models.students import ENCODERS, STUDENT_KINDS, StudentCfg, build_student
from robolearn.learn.train import make_ppo_runner

TERRAIN = {"tile_size": 4.0, "num_rows": 3, "num_cols": 7, "platform_size": 1.0, "border": 5.0}
TASK = {"terrain": TERRAIN, "max_init_level": 2, "episode_length_s": 4.0}  # short evaluation episodes
SMALL = {"num_envs": 28, "steps_per_env": 8, "save_interval": 1000, "max_time_s": 0.0, "eval": {"num_envs": 7},
         "ppo": {"minibatches": 2}}
DISTILL = {"num_envs": 28, "steps_per_env": 16, "minibatches": 2, "save_interval": 1000,
           "student": {"history": 6}}
P, PRIV, A = 45, 45 + 11 + 187, 12


def _train(tmp_path, name: str, teacher: bool = True, task_overrides=None):
    overrides = {**SMALL, "max_iterations": 2, "task_overrides": {**TASK, **(task_overrides or {})}}
    if not teacher:
        overrides["network"] = {"privileged_encoder": []}
    runner = make_ppo_runner(load_train_cfg("go2-rough", overrides=overrides), tmp_path / name)
    runner.learn(progress=False)
    return tmp_path / name


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("teacher"), "teacher")


def _teacher_net() -> TeacherActorCritic:
    torch.manual_seed(0)
    t = TeacherActorCritic(P, PRIV, A, encoder_hidden=[64], latent_dim=16, actor_hidden=[64, 32],
                           critic_hidden=[32], activation="elu")
    t.actor_norm.update(torch.randn(256, PRIV) * 2 + 1)
    return t


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("kind", STUDENT_KINDS)
def test_student_shapes_and_gradients(kind, encoder):
    teacher = _teacher_net()
    cfg = StudentCfg(kind=kind, encoder=encoder, history=10, latent_dim=16)
    student = build_student(cfg, teacher, P, PRIV, A)
    assert student.actor_dim == 10 * P and student.history == 10
    assert torch.equal(student.obs_norm.mean, teacher.actor_norm.mean[:P])  # the teacher's normalization
    x = torch.randn(5, 10 * P)
    assert student.act_mean(x).shape == (5, A)
    out = student.forward_train(x, torch.Generator().manual_seed(0))
    assert out["actions"].shape == (5, A) and out["latent"].shape == (5, 16)
    if kind == "hib":
        assert out["logvar"].shape == (5, 16) and out["decoded"].shape == (5, PRIV - P)
        assert not torch.allclose(out["actions"], student.act_mean(x))  # sampled z in training, mean at inference
    loss = out["actions"].square().sum() + out["latent"].square().sum() + out.get("decoded", x[:, :1]).sum()
    loss.backward()
    for name, param in student.encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"encoder.{name} gets no gradient"
    head_grads = [p.grad for p in student.head.parameters()]
    if kind == "rma":  # the teacher's head, frozen: the encoder alone learns
        assert all(g is None for g in head_grads)
        assert not any(p.requires_grad for p in student.head.parameters())
        with torch.no_grad():
            z = teacher.act_with_latent(torch.randn(3, PRIV))[1]
            ref = teacher.head(torch.zeros(3, P), z)
        assert torch.allclose(student.head(torch.cat([torch.zeros(3, P), z], 1)), ref)
    else:
        assert all(g is not None and g.abs().sum() > 0 for g in head_grads)
    assert student.obs_norm.mean.grad is None  # a buffer


def test_student_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="student.encoder must be one of tcn, gru, mlp, got 'lstm'"):
        StudentCfg(encoder="lstm")
    with pytest.raises(ConfigError, match="student.gru_hidden=0: must be >= 1"):
        StudentCfg(encoder="gru", gru_hidden=0)


def test_gru_student_reads_the_window_in_time_order():
    """The GRU runs over time (dim 1 of [B, H, P]), not over the batch: the order of the frames matters, and one
    env's actions do not depend on the other envs in the batch."""
    student = build_student(StudentCfg(kind="dagger", encoder="gru", history=5, latent_dim=16), _teacher_net(),
                            P, PRIV, A)
    x = torch.randn(4, 5, P)
    swapped = x.clone()
    swapped[:, [0, 1]] = x[:, [1, 0]]
    with torch.no_grad():
        base = student.act_mean(x.flatten(1))
        assert not torch.allclose(base, student.act_mean(swapped.flatten(1)))
        assert torch.allclose(student.act_mean(x[2:3].flatten(1)), base[2:3], atol=1e-6)


def test_history_frames_are_oldest_first_and_refilled_on_reset():
    from robolearn.learn.history import FrameHistory

    h = FrameHistory(2, 1, 3)
    assert h.push(torch.tensor([[1.0], [5.0]])).tolist() == [[1, 1, 1], [5, 5, 5]]
    assert h.push(torch.tensor([[2.0], [6.0]])).tolist() == [[1, 1, 2], [5, 5, 6]]
    out = h.push(torch.tensor([[3.0], [9.0]]), torch.tensor([False, True]))
    assert out.tolist() == [[1, 2, 3], [9, 9, 9]]  # env 1 started a new episode


@pytest.mark.parametrize("kind", STUDENT_KINDS)
def test_distillation_reduces_the_loss_and_keeps_the_teacher_frozen(teacher_run, tmp_path, kind):
    ckpt = load_checkpoint(teacher_run)
    cfg = load_distill_cfg(teacher_run, "go2-rough", overrides={
        **DISTILL, "max_iterations": 12, "student": {**DISTILL["student"], "kind": kind}, "learning_rate": 1e-3})
    runner = make_distillation_runner(cfg, tmp_path / kind)
    distiller = runner.algorithm
    # Scale the teacher's action head so its actions are not near zero (a 2-iteration teacher barely acts).
    with torch.no_grad():
        distiller.teacher.actor[-1].weight.mul_(50.0)
        if kind == "rma":
            distiller.student.head[-1].weight.mul_(50.0)
    teacher_before = copy.deepcopy(distiller.teacher.state_dict())
    student_before = copy.deepcopy(distiller.student)
    summary = runner.learn(progress=False)
    for key, value in distiller.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), f"teacher {key} changed during distillation"
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    assert all(p.grad is None for p in distiller.teacher.parameters())
    # Action matching on the last rollout's states, before vs after training.
    x, target = distiller.buf["x"].flatten(0, 1), distiller.buf["teacher_actions"].flatten(0, 1)
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(student_before.act_mean(x), target).item()
        after = torch.nn.functional.mse_loss(distiller.student.act_mean(x), target).item()
    # rma learns the latent, so its action error falls more slowly than the action-trained students'.
    assert after < (0.7 if kind == "rma" else 0.5) * before, (before, after)
    if kind == "rma":
        assert summary["final_losses"]["loss/latent"] > 0
    assert summary["eval"]["episodes"] == 7
    saved = load_checkpoint(tmp_path / kind)
    assert saved["format"] == "robolearn-student" and saved["config"]["student"]["kind"] == kind
    assert saved["obs_dims"] == ckpt["obs_dims"]
    _, student, _ = load_policy(tmp_path / kind)  # round trip
    with torch.no_grad():
        assert torch.allclose(student.act_mean(x[:8]), distiller.student.act_mean(x[:8]))


def test_missing_or_mismatched_teacher_gives_a_clear_error(teacher_run, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nowhere"):
        make_distillation_runner(load_distill_cfg(tmp_path / "nowhere", "go2-rough", overrides=DISTILL),
                                 tmp_path / "a")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable robolearn checkpoint"):
        make_distillation_runner(load_distill_cfg(bad, "go2-rough", overrides=DISTILL), tmp_path / "b")
    # The teacher saw a 9 x 6 height scan; the distillation task is told to use the 17 x 11 one.
    small_scan = _train(tmp_path, "small-scan", task_overrides={"height_scan": {"size": [0.8, 0.5]}})
    cfg = load_distill_cfg(small_scan, "go2-rough", overrides={
        **DISTILL, "task_overrides": {"height_scan": {"size": [1.6, 1.0]}}})
    with pytest.raises(CheckpointError, match=r"teacher observation/action sizes .*'privileged': 110.* do not "
                                              r"match task go2-rough: .*'privileged': 243"):
        make_distillation_runner(cfg, tmp_path / "c")
    blind = _train(tmp_path, "blind", teacher=False)
    with pytest.raises(ConfigError, match="student.kind rma regresses the teacher's privileged latent"):
        make_distillation_runner(
            load_distill_cfg(blind, "go2-rough", overrides={**DISTILL, "student": {"kind": "rma"}}), tmp_path / "d")
    assert isinstance(load_policy(blind)[1], ActorCritic)
    # A blind PPO policy can still be a DAgger teacher; a student cannot be a teacher.
    make_distillation_runner(load_distill_cfg(blind, "go2-rough", overrides={**DISTILL, "max_iterations": 1}),
                             tmp_path / "e").learn(progress=False)
    with pytest.raises(CheckpointError, match="a teacher must be a PPO run"):
        make_distillation_runner(load_distill_cfg(tmp_path / "e", "go2-rough", overrides=DISTILL), tmp_path / "f")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True,
                          timeout=600)


def test_cli_distill_eval_wide_export_with_history(teacher_run, tmp_path):
    # A GRU-encoder hib student: the export's ONNX parity below covers the recurrent layer.
    out = _cli("distill", "--teacher", str(teacher_run), "--student", "hib", "--iterations", "2", "--num-envs", "14",
               "--set", "student.history=4", "--set", "student.encoder=gru", "--set", "steps_per_env=8",
               "--set", "minibatches=2", "--name", "hib", "--runs-dir", str(tmp_path), "--no-progress")
    assert out.returncode == 0, out.stderr + out.stdout
    run = tmp_path / "hib"
    assert json.loads((run / "summary.json").read_text())["student"] == "hib"
    out = _cli("eval", str(run), "--randomization", "wide", "--episodes", "3", "--num-envs", "2")  # 2 batches
    assert out.returncode == 0, out.stderr + out.stdout
    report = json.loads((run / "eval_mujoco_wide.json").read_text())
    assert report["policy"] == "hib" and report["history"] == 4 and report["episodes"] == 3
    assert report["task_overrides"]["randomization"]["friction"] == [0.2, 1.5]
    # compare: the same episodes as eval (same seeds and batches), 95% intervals, paired differences to a baseline.
    args = ["compare", str(teacher_run), str(run), "--label", "teacher", "--label", "hib", "--randomization", "train",
            "--randomization", "wide", "--episodes", "3", "--output", str(tmp_path / "cmp")]
    out = _cli(*args, "--baseline", "teacher", "--num-envs", "2")
    assert out.returncode == 0, out.stderr + out.stdout
    (table,) = (tmp_path / "cmp").glob("compare_go2-rough_*.json")
    assert {p.suffix for p in (tmp_path / "cmp").iterdir()} == {".json", ".md", ".png"}
    rows = {(r["policy"], r["randomization"]): r for r in json.loads(table.read_text())["rows"]}
    assert len(rows) == 4
    returns = [e["episode_return"] for e in report["per_episode"]]
    hib, teacher = rows["hib", "wide"], rows["teacher", "wide"]
    assert hib["mean_return"] == pytest.approx(np.mean(returns), abs=1e-4)
    # 3 episodes: Student's t_{0.975, 2} = 4.3027 (not the normal 1.96)
    assert hib["mean_return_ci95"] == pytest.approx(4.302653 * np.std(returns, ddof=1) / np.sqrt(3), abs=1e-4)
    assert teacher["mean_return_vs_baseline"] == 0 and teacher["mean_return_vs_baseline_ci95"] == 0
    assert hib["mean_return_vs_baseline"] == pytest.approx(hib["mean_return"] - teacher["mean_return"], abs=2e-4)
    assert hib["survival_vs_baseline"] == pytest.approx(hib["survival"] - teacher["survival"], abs=2e-4)
    md = table.with_suffix(".md").read_text()
    assert f"| hib | wide | 3 | {hib['mean_return']:.2f} ± {hib['mean_return_ci95']:.2f} |" in md
    out = _cli("export", str(run))
    assert out.returncode == 0, out.stderr + out.stdout
    manifest = yaml.safe_load((run / "export" / "deploy.yaml").read_text())
    (graph,) = manifest["graphs"]  # bundle v2: the acting graph says how many frames its input stacks
    assert graph["role"] == "policy" and graph["history"] == 4
    assert graph["inputs"][0]["meaning"] == "observation" and graph["inputs"][0]["shape"] == [-1, 4 * P]
    from robolearn.deploy.bundle import load_bundle

    bundle = load_bundle(run / "export")
    parity = np.load(run / "export" / "parity.npz")
    assert np.abs(bundle.policy.batch(parity["obs"]) - parity["actions"]).max() <= 1e-5
    # Refusals, in one subprocess (tests/cli_batch.py): exit code 2 and the one-line error.
    from cli_batch import run_cli_batch

    refusals = [
        (("distill", "--teacher", str(teacher_run), "--name", "hib", "--runs-dir", str(tmp_path)),
         f"run folder {run} already holds a run"),
        (("eval", str(run), "--randomization", "icy", "--episodes", "1"),
         "error: unknown randomization 'icy' for task go2-rough; valid: train, wide"),
        ((*args, "--baseline", "blind"), "--baseline 'blind' is not one of the runs' labels: teacher, hib"),
        (("export", str(teacher_run)), "privileged teacher"),
    ]
    for (line, message), out in zip(refusals, run_cli_batch([line for line, _ in refusals]), strict=True):
        assert out.returncode == 2 and message in out.stderr, (line, out.stderr)
