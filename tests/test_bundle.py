"""Bundle v2: several graphs with roles and rates, the training contract in deploy.yaml, version 1 still loads,
one-line errors naming the field; the deployable Policy interface (history, chunk queue) and its export."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from robolearn.config import declarations_root, to_dict
from robolearn.deploy.bundle import ChunkedPolicy, load_bundle, read_manifest, sha256_file, write_manifest
from robolearn.deploy.observations import Measurement, ObservationBuilder
from robolearn.deploy.profile import load_profile
from robolearn.deploy.runtime import DeployRuntime
from robolearn.deploy.session import make_robot
from robolearn.errors import BundleError, ConfigError
from robolearn.export import ExtraGraph, export_policy, upgrade_bundle
from robolearn.learn.policy import Chunk, Policy
from robolearn.sim.robots.urdf_import import resolve_urdf_path

SHIPPED = declarations_root() / "policies" / "bundles" / "go2-flat"
FRAME, ACTIONS = 45, 12  # go2-flat


class LinearPolicy(Policy):
    """A small deterministic policy for go2-flat, optionally chunked: chunk[h] = W x + 0.01 h."""

    def __init__(self, chunk: Chunk | None = None, history: int = 1) -> None:
        super().__init__(frame_dim=FRAME, action_dim=ACTIONS, history=history, chunk=chunk)
        torch.manual_seed(0)
        self.net = _Chunker(nn.Linear(history * FRAME, ACTIONS), chunk.horizon if chunk else None)
        nn.init.uniform_(self.net.head.weight, -0.02, 0.02)

    def graph(self) -> nn.Module:
        return self.net


class _Chunker(nn.Module):
    def __init__(self, head: nn.Module, horizon: int | None) -> None:
        super().__init__()
        self.head, self.horizon = head, horizon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.head(x)
        if self.horizon is None:
            return a
        steps = torch.arange(self.horizon, dtype=a.dtype).view(1, -1, 1) * 0.01
        return a.unsqueeze(1) + steps


class Critic(nn.Module):
    """Q_risk(obs, action) -> [B, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(FRAME + ACTIONS, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([obs, action], dim=1)))


@pytest.fixture(scope="module")
def two_graphs(tmp_path_factory):
    """go2-flat: a policy at 50 Hz and a safety critic at 500 Hz, exported with the task's contract."""
    folder = tmp_path_factory.mktemp("bundles") / "two"
    critic = ExtraGraph(name="q_risk", role="safety_critic", rate_hz=500.0, module=Critic(),
                        inputs=[("obs", FRAME, "observation"), ("action", ACTIONS, "action")],
                        outputs=[("q_risk", 1, "cost_value")])
    export_policy(LinearPolicy(), "go2-flat", folder, extra_graphs=[critic], record_envs=2, record_steps=5,
                  source={"test": "two graphs"})
    return folder


def test_v2_round_trip_with_two_graphs_and_the_whole_contract(two_graphs):
    data = yaml.safe_load((two_graphs / "deploy.yaml").read_text())
    m = read_manifest(two_graphs)
    assert to_dict(m) == data  # everything written is read back, nothing added or lost
    assert m.version == 2 and [(g.name, g.role, g.rate_hz) for g in m.graphs] == [
        ("policy", "policy", 50.0), ("q_risk", "safety_critic", 500.0)]
    critic = m.graph("safety_critic")
    assert [(t.name, t.shape, t.meaning) for t in critic.inputs] == [("obs", [-1, 45], "observation"),
                                                                     ("action", [-1, 12], "action")]
    assert [(t.name, t.shape, t.meaning) for t in critic.outputs] == [("q_risk", [-1, 1], "cost_value")]
    assert m.policy.inputs[0].shape == [-1, 45] and m.policy.outputs[0].meaning == "action" and m.policy.chunk is None
    # observation: every term's meaning, scale and training noise
    terms = {t.name: t for t in m.observation}
    assert list(terms) == ["base_ang_vel", "projected_gravity", "velocity_command", "joint_pos", "joint_vel",
                           "last_action"]
    for t in m.observation:
        assert t.units and t.frame and t.reference and t.sign and len(t.noise) == t.dim and t.clip is None
    assert terms["base_ang_vel"].units == "rad/s" and "base" in terms["base_ang_vel"].frame
    assert terms["base_ang_vel"].scale == [0.25] * 3 and terms["base_ang_vel"].noise == [0.2] * 3
    assert terms["joint_pos"].reference == "q - joints.default_pos"
    assert "clipped" in terms["last_action"].reference and terms["joint_vel"].noise == [1.5] * 12
    assert "(0, 0, -1) when level" in terms["projected_gravity"].sign
    assert [(c.name, c.units, c.range) for c in m.commands] == [
        ("lin_vel_x", "m/s", (-1.0, 1.0)), ("lin_vel_y", "m/s", (-0.5, 0.5)), ("ang_vel_yaw", "rad/s", (-1.0, 1.0))]
    # action -> target, PD law, what happens between policy steps, latency (sim/tasks/go2-flat.yaml: 0-2 substeps)
    assert (m.action.type, m.action.scale, m.action.clip, m.action.target_clip) == (
        "joint_position_offset", 0.25, 10.0, "none")
    assert (m.control.law, m.control.rate_hz, m.control.between_steps) == ("pd", 200.0, "hold")
    assert m.control.latency_s == pytest.approx((0.0, 0.01))
    j = m.joints
    assert j.kp == [20.0] * 12 and j.kd == [0.5] * 12 and j.torque_limits[:3] == [23.7, 23.7, 45.43]
    assert j.armature == [0.01] * 12 and j.friction_loss == [0.1] * 12 and j.damping == [0.0] * 12
    # training domain and initial state (sim/tasks/go2-flat.yaml, sim/robots/go2.yaml)
    d = m.domain
    assert d.friction == (0.5, 1.25) and d.added_base_mass_kg == (-1.0, 2.0) and d.motor_strength == (0.9, 1.1)
    assert d.push_interval_s == 15.0 and d.push_velocity_m_s == 1.0 and d.terrain == {"type": "flat"}
    assert d.simulator.timestep_s == 0.005 and d.simulator.integrator == "implicitfast"
    assert m.initial_state.base_pos == [0.0, 0.0, 0.3] and m.initial_state.joint_pos_noise == 0.1
    assert m.initial_state.joint_pos == j.default_pos
    # robot model: the URDF by package, path, version and hash; frames; collision shapes used in training
    r = m.robot_model
    assert (r.urdf.package, r.urdf.path) == ("example-robot-data", "go2_description/urdf/go2.urdf")
    assert r.urdf.sha256 == sha256_file(resolve_urdf_path("example-robot-data:go2_description/urdf/go2.urdf"))
    assert (r.base_link, r.imu_link, r.feet) == ("base", "imu", ["FL_foot", "FR_foot", "RL_foot", "RR_foot"])
    shapes = [(g.link, g.shape) for g in r.collision]
    assert ("base", "box") in shapes and shapes.count(("FL_calf", "sphere")) == 1  # the foot, fused into the calf
    assert sum(s == "capsule" for _, s in shapes) == 12 and all(len(g.quat) == 4 for g in r.collision)
    assert m.source["test"] == "two graphs"
    # write it again: the same file
    copy = two_graphs.parent / "copy"
    shutil.copytree(two_graphs, copy)
    write_manifest(read_manifest(two_graphs), copy)
    assert (copy / "deploy.yaml").read_text() == (two_graphs / "deploy.yaml").read_text()


def test_v2_bundle_loads_every_graph_and_the_runtime_holds_targets(two_graphs):
    bundle = load_bundle(two_graphs)
    assert set(bundle.graphs) == {"policy", "q_risk"} and bundle.parity_error <= 1e-5
    obs = np.zeros((3, FRAME), dtype=np.float32)
    q = bundle.graphs["q_risk"].run({"obs": obs, "action": np.zeros((3, ACTIONS))})["q_risk"]
    assert q.shape == (3, 1) and np.all((q > 0) & (q < 1))
    profile = load_profile("go2")
    rt = DeployRuntime(bundle, profile, make_robot(profile, "sim"))
    assert rt.hold_targets and rt.policy_every == 10  # 500 Hz control, 50 Hz policy, targets held as trained
    rt.close()


V1_MANIFEST = """\
format: robolearn-bundle
version: 1
task: go2-flat
robot: go2
kind: legged
policy: {file: policy.onnx, sha256: SHA, input: obs, output: actions, obs_dim: 45, action_dim: 12, history: 1}
observation:
- {name: base_ang_vel, dim: 3, scale: [0.25, 0.25, 0.25]}
- {name: projected_gravity, dim: 3, scale: [1.0, 1.0, 1.0]}
- {name: velocity_command, dim: 3, scale: [2.0, 2.0, 0.25]}
- {name: joint_pos, dim: 12, scale: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}
- {name: joint_vel, dim: 12, scale: [0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]}
- {name: last_action, dim: 12, scale: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}
joints:
  names: [FL_hip_joint, FL_thigh_joint, FL_calf_joint, FR_hip_joint, FR_thigh_joint, FR_calf_joint, RL_hip_joint,
    RL_thigh_joint, RL_calf_joint, RR_hip_joint, RR_thigh_joint, RR_calf_joint]
  default_pos: [0.1, 0.8, -1.5, -0.1, 0.8, -1.5, 0.1, 1.0, -1.5, -0.1, 1.0, -1.5]
  kp: [20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0]
  kd: [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
  pos_limits: [[-1.0472, 1.0472], [-1.5708, 3.4907], [-2.7227, -0.83776], [-1.0472, 1.0472], [-1.5708, 3.4907],
    [-2.7227, -0.83776], [-1.0472, 1.0472], [-0.5236, 4.5379], [-2.7227, -0.83776], [-1.0472, 1.0472],
    [-0.5236, 4.5379], [-2.7227, -0.83776]]
  vel_limits: [30.1, 30.1, 15.7, 30.1, 30.1, 15.7, 30.1, 30.1, 15.7, 30.1, 30.1, 15.7]
  torque_limits: [23.7, 23.7, 45.43, 23.7, 23.7, 45.43, 23.7, 23.7, 45.43, 23.7, 23.7, 45.43]
action_scale: 0.25
clip_actions: 10.0
policy_hz: 50.0
sim_hz: 200.0
commands: {lin_vel_x: [-1.0, 1.0], lin_vel_y: [-0.5, 0.5], ang_vel_yaw: [-1.0, 1.0]}
source: {run: fixture}
"""


@pytest.fixture
def v1_bundle(tmp_path):
    """A version 1 bundle as written before version 2 (the shipped go2-flat graph, a literal v1 deploy.yaml)."""
    folder = tmp_path / "v1"
    folder.mkdir()
    for name in ("policy.onnx", "parity.npz"):
        shutil.copyfile(SHIPPED / name, folder / name)
    (folder / "deploy.yaml").write_text(V1_MANIFEST.replace("SHA", sha256_file(folder / "policy.onnx")))
    return folder


def test_v1_bundle_still_loads_and_runs(v1_bundle):
    bundle = load_bundle(v1_bundle)
    m = bundle.manifest
    assert m.version == 1 and m.policy_hz == 50.0 and m.sim_hz == 200.0 and m.policy.obs_dim == 45
    assert m.action_scale == 0.25 and m.clip_actions == 10.0 and m.interpolation == "linear"  # as the v1 runtime did
    assert m.domain is None and m.robot_model is None and m.observation[0].units is None  # no contract in v1
    assert [c.name for c in m.commands] == ["lin_vel_x", "lin_vel_y", "ang_vel_yaw"]
    assert bundle.parity_error <= 1e-4
    builder = ObservationBuilder(m)
    obs = builder.build(Measurement(q=np.asarray(m.joints.default_pos), dq=np.zeros(12), command=np.zeros(3),
                                    last_action=np.zeros(12), quat=np.array([1.0, 0, 0, 0]), gyro=np.zeros(3)))
    assert obs.shape == (45,) and bundle.policy(obs).shape == (12,)
    profile = load_profile("go2")
    rt = DeployRuntime(bundle, profile, make_robot(profile, "sim"))
    assert not rt.hold_targets
    rt.close()
    with pytest.raises(BundleError, match="writes version 2"):
        write_manifest(m, v1_bundle)


def test_upgrade_v1_to_v2_keeps_the_graph(v1_bundle, tmp_path):
    out = upgrade_bundle(v1_bundle, tmp_path / "v2")
    bundle = load_bundle(out)
    assert bundle.manifest.version == 2 and bundle.manifest.source["upgraded_from_version"] == 1
    assert sha256_file(out / "policy.onnx") == sha256_file(v1_bundle / "policy.onnx")
    assert bundle.manifest.control.between_steps == "hold" and bundle.manifest.robot_model.imu_link == "imu"
    (v1_bundle / "deploy.yaml").write_text((v1_bundle / "deploy.yaml").read_text().replace("kp: [20.0,", "kp: [25.0,"))
    with pytest.raises(BundleError, match="joints.kp differs from task go2-flat"):
        upgrade_bundle(v1_bundle, tmp_path / "v2b")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["graphs"][1].update(rate_hz="fast"), r"graphs\[1\]\.rate_hz: expected a number, got 'fast'"),
    (lambda d: d["graphs"][1].update(role="critic"), r"graphs\[1\]\.role: expected one of policy, high_level"),
    (lambda d: d["graphs"][0].update(rate_hz=0), r"graphs\[0\]\.rate_hz: must be > 0"),
    (lambda d: d["control"].pop("between_steps"), r"\.control: missing field between_steps"),
    (lambda d: d["observation"][0].pop("units"), r"observation\[0\] \(base_ang_vel\)\.units: required in version 2"),
    (lambda d: d["observation"][3].update(noise=[0.01]), r"observation\[3\] \(joint_pos\)\.noise: 1 values for dim 12"),
    (lambda d: d["joints"].update(armature=[0.01]), r"joints\.armature has 1 entries, joints\.names has 12"),
    (lambda d: d["control"].update(latency_s=[0.02, 0.01]), r"control\.latency_s: expected 0 <= low <= high"),
    (lambda d: d["graphs"][0].update(chunk={"horizon": 4, "execute": 6}), r"graphs\[0\]\.chunk\.execute: must be in"),
    (lambda d: d.pop("robot_model"), r"robot_model: required in version 2"),
    (lambda d: d["robot_model"]["urdf"].pop("sha256"), r"robot_model\.urdf: missing field sha256"),
    (lambda d: d["graphs"][1].update(role="policy"), r"graphs: exactly one graph must have role policy or low_level"),
    (lambda d: d.update(version=3), r"version: 3 is not supported"),
])
def test_malformed_v2_manifest_is_a_one_line_error_naming_the_field(two_graphs, tmp_path, edit, message):
    folder = tmp_path / "bad"
    shutil.copytree(two_graphs, folder)
    data = yaml.safe_load((folder / "deploy.yaml").read_text())
    edit(data)
    (folder / "deploy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(BundleError, match=message) as info:
        read_manifest(folder)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(folder / "deploy.yaml"))


def test_chunked_policy_executes_n_actions_per_chunk_and_keeps_its_history():
    """Policy interface: the model runs every `execute` calls; each action comes from the chunk of the call that
    ran it; frames are recorded on every call (history 2, oldest first); reset() empties queue and history."""
    policy = LinearPolicy(chunk=Chunk(horizon=4, execute=3), history=2)
    frames = [torch.full((FRAME,), float(k)) for k in range(7)]
    actions = [policy.act(f) for f in frames]
    assert policy.model_calls == 3  # calls 0, 3 and 6
    net = policy.graph()
    for k, a in enumerate(actions):
        start = k - k % 3  # the call that ran the model
        x = torch.cat([frames[max(start - 1, 0)], frames[start]]).unsqueeze(0)
        assert torch.allclose(a, net(x)[0, k % 3], atol=1e-6), k
    chunk = policy.act_chunk(frames[0])
    assert chunk.shape == (4, ACTIONS) and policy.model_calls == 4
    policy.reset()
    assert torch.allclose(policy.act(frames[5]), net(torch.cat([frames[5], frames[5]]).unsqueeze(0))[0, 0])
    unchunked = LinearPolicy()
    assert unchunked.act_chunk(frames[1]).shape == (1, ACTIONS) and unchunked.act(frames[1]).shape == (ACTIONS,)
    with pytest.raises(ConfigError, match="execute <= horizon"):
        Chunk(horizon=2, execute=3)


def test_exported_chunked_policy_acts_like_the_policy(tmp_path):
    """Export takes any Policy: a chunked one becomes a graph [B, horizon, A] whose bundle policy queues the same
    `execute` actions per chunk as the Policy does."""
    policy = LinearPolicy(chunk=Chunk(horizon=4, execute=2, interpolation="linear"))
    export_policy(policy, "go2-flat", tmp_path / "chunked", record_envs=2, record_steps=4)
    bundle = load_bundle(tmp_path / "chunked")
    graph = bundle.manifest.policy
    assert graph.outputs[0].shape == [-1, 4, 12] and graph.outputs[0].meaning == "action_chunk"
    assert (graph.chunk.horizon, graph.chunk.execute, bundle.manifest.interpolation) == (4, 2, "linear")
    assert isinstance(bundle.policy, ChunkedPolicy)
    rng = np.random.default_rng(0)
    policy.reset()
    for _ in range(5):
        obs = rng.normal(size=FRAME).astype(np.float32)
        assert np.allclose(bundle.policy(obs), policy.act(torch.from_numpy(obs)).numpy(), atol=1e-5)
    assert bundle.policy.calls == policy.model_calls == 3
    bundle.policy.reset()
    assert not bundle.policy.queue


def test_contract_of_a_task_trained_with_the_runtime_target_path():
    """panda-reach trained with the deploy runtime's targets (linear, clamped, rate-limited, trip margin): the
    contract says so, and a fixed-base arm has no base pose. Without them (the yaml's default today) it says hold."""
    from robolearn.export import bundle_contract
    from robolearn.sim.tasks import make_task

    contracts = []
    for deploy_targets in (True, False):
        task = make_task("panda-reach", 1, overrides={"deploy_targets": deploy_targets})
        try:
            contracts.append(bundle_contract(task))
        finally:
            task.close()
    c, plain = contracts
    assert (plain["action"].target_clip, plain["action"].max_target_rate) == ("none", None)
    assert plain["control"].between_steps == "hold"
    a, ctl = c["action"], c["control"]
    assert (a.target_clip, a.max_target_rate, a.target_fault_margin) == ("joint_range", 1.0, 0.3)
    assert (ctl.between_steps, ctl.latency_s) == ("linear", (0.0, 0.0))
    assert c["initial_state"].base_pos is None and c["robot_model"].floating_base is False
    assert [t.name for t in c["observation"]][2] == "ee_pos" and c["robot_model"].end_effector is not None
