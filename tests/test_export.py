"""Export: checkpoint -> policy bundle; onnxruntime parity; the deploy side rebuilds the training observations."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import yaml
from test_cli import run

from robolearn.deploy.bundle import load_bundle, read_manifest
from robolearn.deploy.kinematics import ArmKinematics
from robolearn.deploy.observations import Measurement, ObservationBuilder
from robolearn.errors import BundleError
from robolearn.export import export_run
from robolearn.learn.config import load_train_cfg
from robolearn.learn.train import make_ppo_runner
from robolearn.sim.tasks import make_task


@pytest.fixture(scope="module")
def reach_run(tmp_path_factory):
    cfg = load_train_cfg("panda-reach", overrides={"num_envs": 32, "max_iterations": 2, "max_time_s": 0,
                                                   "eval": {"num_envs": 4}})
    run_dir = tmp_path_factory.mktemp("runs") / "reach"
    runner = make_ppo_runner(cfg, run_dir)
    runner.learn(progress=False)
    runner.close()
    return run_dir


def test_export_writes_a_checked_bundle(reach_run, tmp_path):
    report = export_run(reach_run, tmp_path / "bundle", record_envs=4, record_steps=20)
    folder = report.folder
    assert {p.name for p in folder.iterdir()} == {"policy.onnx", "deploy.yaml", "parity.npz"}
    assert report.parity_max_error <= 1e-5 and report.parity_samples == 4 * 21
    manifest = yaml.safe_load((folder / "deploy.yaml").read_text())
    assert manifest["policy"]["sha256"] == hashlib.sha256((folder / "policy.onnx").read_bytes()).hexdigest()
    assert manifest["joints"]["names"] == [f"panda_joint{i}" for i in range(1, 8)]
    assert manifest["policy_hz"] == 50.0 and manifest["sim_hz"] == 200.0 and manifest["policy"]["history"] == 1
    assert [t["name"] for t in manifest["observation"]] == ["joint_pos", "joint_vel", "ee_pos", "target_pos",
                                                            "target_error", "last_action"]
    assert manifest["joints"]["vel_limits"][0] == pytest.approx(2.175)  # from the URDF's <limit velocity>
    assert manifest["commands"]["target_x"] == [0.3, 0.6]
    bundle = load_bundle(folder)
    assert bundle.parity_error is not None and bundle.parity_error <= 1e-5
    # The ONNX graph is the deterministic actor with the normalizer inside: same numbers as torch.
    ckpt = torch.load(reach_run / "checkpoints" / "model.pt", weights_only=False)
    assert ckpt["model"]["actor_norm.count"] > 0
    obs = np.load(folder / "parity.npz")["obs"]
    assert np.abs(bundle.policy.batch(obs) - np.load(folder / "parity.npz")["actions"]).max() <= 1e-5


def test_malformed_manifest_names_the_field(reach_run, tmp_path):
    folder = export_run(reach_run, tmp_path / "bundle", record_envs=2, record_steps=2).folder
    data = yaml.safe_load((folder / "deploy.yaml").read_text())
    data["policy"]["obs_dim"] = "many"
    (folder / "deploy.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(BundleError, match=r"deploy.yaml.*policy.obs_dim: expected an integer"):
        read_manifest(folder)
    data["policy"]["obs_dim"] = 7
    (folder / "deploy.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(BundleError, match="policy.obs_dim is 7"):
        read_manifest(folder)
    (folder / "deploy.yaml").unlink()
    with pytest.raises(BundleError, match="not a policy bundle, deploy.yaml is missing"):
        load_bundle(folder)
    with pytest.raises(BundleError, match="policy bundle not found: nope.*shipped bundle: go2-flat"):
        load_bundle("nope")


def test_deploy_observations_equal_training_observations_go2():
    """The runtime's observation builder, fed what a robot measures, reproduces the task's policy group."""
    task = make_task("go2-flat", 4, seed=5, overrides={"noise_scale": 0.0})
    manifest_layout = task.policy_obs_layout()
    from robolearn.deploy.bundle import BundleManifest, JointSpec, ObsTerm, PolicySpec

    n = task.num_actions
    manifest = BundleManifest(
        format="robolearn-bundle", version=1, task="go2-flat", robot="go2", kind="legged",
        policy=PolicySpec(sha256="", obs_dim=task.obs_dims["policy"], action_dim=n),
        observation=[ObsTerm(**t) for t in manifest_layout],
        joints=JointSpec(names=list(task.robot.joint_names), default_pos=task.robot.default_joint_pos.tolist(),
                         kp=[20.0] * n, kd=[0.5] * n, pos_limits=[(-1.0, 1.0)] * n, vel_limits=[1.0] * n,
                         torque_limits=[1.0] * n),
        action_scale=0.25, clip_actions=10.0, policy_hz=50.0, sim_hz=200.0)
    builder = ObservationBuilder(manifest)
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        obs = task.step(torch.randn(4, n, generator=gen) * 0.5)[0]["policy"]
    qpos, qvel = task.sim.qpos.numpy(), task.sim.qvel.numpy()
    for env in range(4):
        m = Measurement(q=qpos[env, task.robot.qpos_adr], dq=qvel[env, task.robot.qvel_adr],
                        command=task.commands[env].numpy(), last_action=task.actions[env].numpy(),
                        quat=qpos[env, 3:7], gyro=qvel[env, 3:6])
        builder.reset()
        assert np.abs(builder.build(m) - obs[env].numpy()).max() < 1e-5
    task.close()


def test_deploy_observations_equal_training_observations_panda(reach_run, tmp_path):
    """Arm terms come from forward kinematics of the measured joints. In training, ee_pos is a MuJoCo sensor,
    which mj_step evaluates before integrating: it lags the joints by one physics step (5 ms), a few mm at
    reaching speed. Every other term must match exactly."""
    folder = export_run(reach_run, tmp_path / "bundle", record_envs=2, record_steps=2).folder
    manifest = read_manifest(folder)
    builder = ObservationBuilder(manifest)
    kin = ArmKinematics("panda", manifest.joints.names)
    task = make_task("panda-reach", 3, seed=2)
    for _ in range(10):
        obs = task.step(torch.rand(3, 7) - 0.5)[0]["policy"]
    qpos, qvel = task.sim.qpos.numpy(), task.sim.qvel.numpy()
    lag_bound = 0.01
    for env in range(3):
        q = qpos[env, task.robot.qpos_adr]
        m = Measurement(q=q, dq=qvel[env, task.robot.qvel_adr], command=task.target[env].numpy(),
                        last_action=task.actions[env].numpy(), ee_pos=kin.fk(q))
        builder.reset()
        built, start = builder.build(m), 0
        for term in manifest.observation:
            diff = np.abs(built[start:start + term.dim] - obs[env, start:start + term.dim].numpy()).max()
            assert diff < (lag_bound if term.name in ("ee_pos", "target_error") else 1e-5), (term.name, diff)
            start += term.dim
    task.close()


def test_history_frames_are_stacked_oldest_first(reach_run, tmp_path):
    manifest = read_manifest(export_run(reach_run, tmp_path / "b", record_envs=2, record_steps=2).folder)
    manifest.policy.history = 3
    manifest.policy.obs_dim *= 3
    builder = ObservationBuilder(manifest)
    frames = []
    for k in range(4):
        m = Measurement(q=np.full(7, 0.1 * k), dq=np.zeros(7), command=np.zeros(3), last_action=np.zeros(7),
                        ee_pos=np.zeros(3))
        out = builder.build(m)
        frames.append(builder.frame(m))
    d = manifest.frame_dim
    assert out.shape == (3 * d,)
    assert np.allclose(out[:d], frames[1]) and np.allclose(out[2 * d:], frames[3])


def test_cli_train_export_deploy_on_the_simulated_robot(tmp_path):
    """The path a user takes, as subprocesses: train (short) -> export -> deploy at real time -> damp."""
    out = run("train", "go2-flat", "--num-envs", "32", "--iterations", "1", "--max-time", "0", "--name", "g",
              "--runs-dir", str(tmp_path), "--set", "eval.num_envs=2",
              "--set", "eval.task_overrides.episode_length_s=1",
              "--no-progress")
    assert out.returncode == 0, out.stderr
    out = run("export", str(tmp_path / "g"))
    assert out.returncode == 0, out.stderr
    assert "max abs error" in out.stdout
    report = tmp_path / "deploy.json"
    out = run("deploy", "--robot", "go2", "--policy", str(tmp_path / "g" / "export"), "--auto", "--duration", "4.5",
              "--cmd", "0.3,0,0", "--report", str(report), "--set", "stand.duration_s=1.0")
    assert out.returncode == 0, out.stderr
    result = json.loads(report.read_text())
    assert result["final_mode"] == "damp" and result["timing"]["ticks"] > 2000
    assert "stand: ramping" in out.stderr and "run: policy at 50 Hz" in out.stderr
    out = run("deploy", "--robot", "panda", "--policy", str(tmp_path / "g" / "export"), "--auto", "--duration", "1")
    assert out.returncode == 2 and "a legged policy cannot run on the arm robot panda" in out.stderr


def test_arm_bundle_runs_on_the_panda_twin_and_holds_its_pose_by_default(reach_run, tmp_path):
    """The arm path: end-effector observations from forward kinematics; with no target given, Run holds the
    end effector where it was (an arm's zero command would be a target at its own base)."""
    from robolearn.deploy.profile import load_profile
    from robolearn.deploy.runtime import DeployRuntime, Mode
    from robolearn.deploy.session import make_robot

    bundle = load_bundle(export_run(reach_run, tmp_path / "bundle", record_envs=2, record_steps=2).folder)
    profile = load_profile("panda")
    robot = make_robot(profile, "sim")
    rt = DeployRuntime(bundle, profile, robot)
    rt.spin(0.05)
    rt.stand()
    rt.spin(profile.stand.duration_s + 0.1)
    ee = rt.kinematics.fk(rt.last_state.q[rt.index])
    assert rt.run() == "run"
    assert np.allclose(rt.command, ee)
    rt.spin(0.3)
    assert rt.mode in (Mode.RUN, Mode.DAMP) and len(rt.stats.policy_latency) > 5
    if rt.mode == Mode.DAMP:  # an untrained policy may be stopped by the safety layer, never crash the loop
        assert rt.trips and "runtime error" not in rt.trips[-1].reason
    rt.close()
