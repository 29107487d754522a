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
from robolearn.deploy.kinematics import ChainKinematics
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
    graph = manifest["graphs"][0]
    assert manifest["version"] == 2 and graph["role"] == "policy"
    assert graph["sha256"] == hashlib.sha256((folder / "policy.onnx").read_bytes()).hexdigest()
    assert manifest["joints"]["names"] == [f"panda_joint{i}" for i in range(1, 8)]
    assert graph["rate_hz"] == 50.0 and manifest["control"]["rate_hz"] == 200.0 and graph["history"] == 1
    assert [t["name"] for t in manifest["observation"]] == ["joint_pos", "joint_vel", "ee_pos", "target_pos",
                                                            "target_error", "last_action"]
    assert manifest["joints"]["vel_limits"][0] == pytest.approx(2.175)  # from the URDF's <limit velocity>
    assert manifest["commands"][0] == {"name": "target_x", "units": "m", "frame": "robot base frame, x axis",
                                       "range": [0.3, 0.6]}
    bundle = load_bundle(folder)
    assert bundle.parity_error is not None and bundle.parity_error <= 1e-5
    ckpt = torch.load(reach_run / "checkpoints" / "model.pt", weights_only=False)
    assert ckpt["model"]["actor_norm.count"] > 0  # a trained normalizer, inside the graph


def test_onnxruntime_equals_torch_on_fresh_observations(reach_run, tmp_path):
    """The exporter checks onnxruntime against torch on observations it recorded itself; here both run on NEW
    observations it never saw: in-distribution ones (the normalizer's mean and spread), far-out ones (x100 the
    spread, +-1e3) and batch sizes 1 and 333. The torch side is the checkpoint's own actor (load_policy,
    act_mean), not the exporter's wrapper; the ONNX side is a plain onnxruntime session on policy.onnx."""
    import onnxruntime as ort

    from robolearn.learn.checkpoint import load_policy

    folder = export_run(reach_run, tmp_path / "bundle", record_envs=2, record_steps=2).folder
    recorded = np.load(folder / "parity.npz")["obs"]
    _, model, _ = load_policy(reach_run)
    model.eval()
    mean, std = model.actor_norm.mean.numpy(), np.sqrt(model.actor_norm.var.numpy() + model.actor_norm.eps)
    rng = np.random.default_rng(12345)
    dim = recorded.shape[1]
    typical = mean + std * rng.standard_normal((300, dim))
    far = mean + 100.0 * std * rng.standard_normal((30, dim))
    huge = rng.choice([-1e3, 1e3], size=(3, dim)) * rng.random((3, dim))
    fresh = np.concatenate([typical, far, huge]).astype(np.float32)
    assert np.abs(fresh[:, None, :] - recorded[None]).max(axis=2).min() > 1e-3  # none of them was recorded
    session = ort.InferenceSession(str(folder / "policy.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    with torch.no_grad():
        want = model.act_mean(torch.from_numpy(fresh)).numpy()
    got = session.run(None, {name: fresh})[0]
    assert got.shape == want.shape == (len(fresh), 7) and np.all(np.isfinite(got))
    # float32 through the same layers: in distribution within the exporter's 1e-5; far out, relative to the size
    # of the actions (they grow with the input: the last layer is linear)
    np.testing.assert_allclose(got[:300], want[:300], rtol=0, atol=1e-5)
    scale = np.abs(want[300:]).max(axis=1, keepdims=True)
    assert np.all(np.abs(got[300:] - want[300:]) <= 1e-5 + 1e-5 * scale), np.abs(got[300:] - want[300:]).max()
    z = np.abs((fresh[300:] - mean) / std)  # what the network's first layer sees, in units of the training spread
    assert z.max(axis=1).min() > 50 and np.abs(fresh[300:]).max() > 100 * np.abs(recorded).max()
    for i in (0, len(fresh) - 1):  # a batch of one (the runtime's case), typical and huge
        got1 = session.run(None, {name: fresh[i:i + 1]})[0][0]
        assert np.all(np.abs(got1 - want[i]) <= 1e-5 + 1e-5 * np.abs(want[i]).max()), (i, got1, want[i])


def test_malformed_manifest_names_the_field(reach_run, tmp_path):
    folder = export_run(reach_run, tmp_path / "bundle", record_envs=2, record_steps=2).folder
    data = yaml.safe_load((folder / "deploy.yaml").read_text())
    data["graphs"][0]["inputs"][0]["shape"] = [-1, "many"]
    (folder / "deploy.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(BundleError, match=r"deploy.yaml.*graphs\[0\].inputs\[0\].shape\[1\]: expected an integer"):
        read_manifest(folder)
    data["graphs"][0]["inputs"][0]["shape"] = [-1, 7]
    (folder / "deploy.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(BundleError, match=r"graphs\[0\].inputs\[0\].shape: .* but the input has 7"):
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
    from robolearn.deploy.bundle import JointSpec, ManifestV1, PolicyV1, TermV1

    n = task.num_actions
    manifest = ManifestV1(
        format="robolearn-bundle", version=1, task="go2-flat", robot="go2", kind="legged",
        policy=PolicyV1(sha256="", obs_dim=task.obs_dims["policy"], action_dim=n),
        observation=[TermV1(**t) for t in manifest_layout],
        joints=JointSpec(names=list(task.robot.joint_names), default_pos=task.robot.default_joint_pos.tolist(),
                         kp=[20.0] * n, kd=[0.5] * n, pos_limits=[(-1.0, 1.0)] * n, vel_limits=[1.0] * n,
                         torque_limits=[1.0] * n),
        action_scale=0.25, clip_actions=10.0, policy_hz=50.0, sim_hz=200.0).to_v2()
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
    """Arm terms come from forward kinematics of the measured joints (numpy, from the kinematic chain in the
    bundle, as the deploy runtime computes them). In training, ee_pos is a MuJoCo sensor,
    which mj_step evaluates before integrating: it lags the joints by one physics step (5 ms), a few mm at
    reaching speed. Every other term must match exactly."""
    folder = export_run(reach_run, tmp_path / "bundle", record_envs=2, record_steps=2).folder
    manifest = read_manifest(folder)
    builder = ObservationBuilder(manifest)
    kin = ChainKinematics.from_manifest(manifest)
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
    assert out.returncode == 2 and "this legged policy cannot run on the arm robot panda" in out.stderr


def test_arm_bundle_runs_on_the_panda_twin_and_holds_its_pose_by_default(reach_run, tmp_path):
    """The arm path: end-effector observations from forward kinematics; with no target given, Run holds the
    end effector where it was (an arm's zero command would be a target at its own base)."""
    from robolearn.config import from_dict, merge, to_dict
    from robolearn.deploy.profile import HardwareProfile, load_profile
    from robolearn.deploy.runtime import DeployRuntime, Mode
    from robolearn.deploy.session import make_robot

    bundle = load_bundle(export_run(reach_run, tmp_path / "bundle", record_envs=2, record_steps=2).folder)
    # The policy thread can wait >60 ms for a core on a loaded 2-core machine; the watchdog is tested elsewhere.
    data = merge(to_dict(load_profile("panda")), {"safety": {"policy_timeout_ms": 250}})
    profile = from_dict(HardwareProfile, data, where="test profile")
    robot = make_robot(profile, "sim")
    rt = DeployRuntime(bundle, profile, robot)
    rt.spin(0.05)
    rt.stand()
    rt.spin(profile.stand.duration_s + 0.1)
    q0 = rt.last_state.q[rt.index].copy()
    ee = rt.kinematics.fk(q0)
    assert rt.run() == "run"
    assert np.allclose(rt.command, ee)
    joints = []
    rt.spin(0.6, on_tick=lambda r: joints.append(r.last_state.q[r.index].copy()))
    assert rt.mode == Mode.RUN and rt.trips == [], rt.trips
    assert len(rt.stats.policy_latency) > 10 and np.array_equal(rt.command, ee)  # the target stayed the start point
    # Held: over 0.6 s of Run the end effector stays within 4 cm of where it was and no joint moves by 0.06 rad.
    # (This 2-iteration policy settles 1.8 cm / 0.034 rad away; given the zero command instead, it goes 6.8 cm /
    # 0.094 rad toward the base within 0.3 s and stays there.)
    drift_ee = max(float(np.linalg.norm(rt.kinematics.fk(q) - ee)) for q in joints[::5])
    drift_q = float(np.abs(np.array(joints) - q0).max())
    assert drift_ee < 0.04 and drift_q < 0.06, (drift_ee, drift_q)
    rt.close()
