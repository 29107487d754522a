"""The learned safety filter (deploy/safety_filter.py) with real ONNX critics in real bundles: the go2-flat bundle
upgraded to version 2 with a `safety_critic` graph added (`robolearn.export.add_graphs`), run by onnxruntime.

The critics are written by hand so that the right answer is known: risk = sigmoid(k (a . w - b)) rises with the
action along w, so the filter must replace actions with a . w above a level and keep the others.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from robolearn.config import declarations_root, from_dict, merge, to_dict
from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.profile import SafetyFilterCfg
from robolearn.deploy.runtime import DeployRuntime, Mode
from robolearn.deploy.safety_filter import SafetyFilter
from robolearn.errors import BundleError, ConfigError
from robolearn.export import ExtraGraph, add_graphs, upgrade_bundle

FRAME, ACTIONS = 45, 12  # go2-flat


class LinearRisk(nn.Module):
    """risk(obs, a) = sigmoid(k (a . w - b)); NaN where a . w > `nan_above`, or, with `nan_at_zero_command`, where
    the forward velocity command (observation 6) is exactly 0 (never in the exporter's random parity inputs)."""

    def __init__(self, w: np.ndarray, b: float, k: float = 10.0, nan_above: float = math.inf,
                 nan_at_zero_command: bool = False) -> None:
        super().__init__()
        self.register_buffer("w", torch.as_tensor(w, dtype=torch.float32))
        self.b, self.k, self.nan_above, self.nan_at_zero_command = b, k, nan_above, nan_at_zero_command

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        s = action @ self.w
        risk = torch.sigmoid(self.k * (s - self.b))
        nan = s > self.nan_above
        if self.nan_at_zero_command:
            nan = nan | (obs[:, 6] == 0)
        return torch.where(nan, torch.full_like(risk, float("nan")), risk + 0.0 * obs[:, 0]).unsqueeze(1)


def risk_of(a: np.ndarray, w: np.ndarray, b: float, k: float = 10.0) -> float:
    return 1.0 / (1.0 + math.exp(-k * (float(a @ w) - b)))


def critic_bundle(folder, module: nn.Module, history: int = 1):
    shutil.copytree(declarations_root() / "policies" / "bundles" / "go2-flat", folder / "v1")
    upgrade_bundle(folder / "v1", folder / "v2")
    add_graphs(folder / "v2", [ExtraGraph(name="q_risk", role="safety_critic", rate_hz=500.0, module=module,
                                          inputs=[("obs", history * FRAME, "observation"),
                                                  ("action", ACTIONS, "action")],
                                          outputs=[("q_risk", 1, "cost_value")], history=history)])
    return load_bundle(folder / "v2")


W0 = np.eye(ACTIONS)[0]  # risk grows with the first action component (FL hip)


@pytest.fixture(scope="module")
def hip_bundle(tmp_path_factory):
    return critic_bundle(tmp_path_factory.mktemp("hip"), LinearRisk(W0, b=0.5))


def make_filter(bundle, **cfg) -> SafetyFilter:
    return SafetyFilter(bundle.graphs["q_risk"], SafetyFilterCfg(**cfg), frame_dim=FRAME, action_dim=ACTIONS)


def test_onnx_critic_matches_the_formula_and_the_filter_never_passes_a_risky_action(hip_bundle):
    f = make_filter(hip_bundle, threshold=0.2)
    rng = np.random.default_rng(0)
    frame = rng.standard_normal(FRAME).astype(np.float32)
    passed = replaced = 0
    for _ in range(300):
        a = rng.uniform(-1.5, 1.5, ACTIONS).astype(np.float32)
        d = f.decide(frame, a, now=0.0)
        assert d.risk == pytest.approx(risk_of(a, W0, 0.5), abs=1e-5)  # onnxruntime computes the critic
        assert d.damp is None  # 0 (the default pose) is always a candidate, and safe here
        assert d.chosen_risk <= 0.2 and risk_of(d.action, W0, 0.5) <= 0.2 + 1e-5  # never a risky action out
        if d.replaced:
            replaced += 1
            assert d.risk > 0.2 and not np.array_equal(d.action, a)
        else:
            passed += 1
            np.testing.assert_array_equal(d.action, a)  # a safe action passes untouched
    assert passed > 50 and replaced > 50  # both paths were taken
    assert f.log.replaced == replaced and f.log.ticks == 300 and f.log.max_risk > 0.9


def test_no_candidate_under_the_threshold_damps(tmp_path):
    always = critic_bundle(tmp_path, LinearRisk(np.zeros(ACTIONS), b=-1.0))  # risk sigmoid(10) everywhere
    f = make_filter(always, threshold=0.2)
    d = f.decide(np.zeros(FRAME), np.zeros(ACTIONS), now=0.0)
    assert d.damp is not None and "no candidate under it" in d.damp and f.log.damped == 1


def test_a_nan_risk_damps_and_nan_candidates_are_never_chosen(tmp_path):
    f = make_filter(critic_bundle(tmp_path, LinearRisk(W0, b=0.5, nan_above=4.0)), threshold=0.2)
    d = f.decide(np.zeros(FRAME), np.full(ACTIONS, 5.0, np.float32), now=0.0)  # a . w = 5 > 4: NaN
    assert d.damp is not None and "returned nan" in d.damp
    # risky (sigmoid(30)) but finite; the random candidates around 3.5 are partly NaN (> 4), never chosen
    d = f.decide(np.zeros(FRAME), np.full(ACTIONS, 3.5, np.float32), now=0.0)
    assert d.damp is None and d.replaced and np.isfinite(d.chosen_risk) and d.chosen_risk <= 0.2


def test_impedance_drops_while_the_risk_is_high_and_recovers_after(hip_bundle):
    f = make_filter(hip_bundle, threshold=0.5, impedance_threshold=0.1, impedance_scale=0.4, impedance_recover_s=0.5)
    safe, risky = np.zeros(ACTIONS, np.float32), np.r_[0.45, np.zeros(ACTIONS - 1)].astype(np.float32)  # 0.38
    f.decide(np.zeros(FRAME), safe, now=0.0)
    assert f.gain_scale(0.0) == 1.0  # risk 0.007: full gains
    for t in (1.0, 1.1, 1.2):
        assert not f.decide(np.zeros(FRAME), risky, now=t).replaced  # under the threshold, over impedance's
        assert f.gain_scale(t) == pytest.approx(0.4)
    f.decide(np.zeros(FRAME), safe, now=1.3)  # risk low again: ramp from 0.4 back to 1 over 0.5 s
    assert f.gain_scale(1.45) == pytest.approx(0.4 + 0.6 * 0.25 / 0.5)
    assert f.gain_scale(1.7) == 1.0 and f.gain_scale(2.0) == 1.0


def test_critic_inputs_are_checked_against_the_bundle(hip_bundle):
    with pytest.raises(BundleError, match="must be its history of 1 observation frame\\(s\\) \\[1 x 44\\] and one "
                                          "action \\[12\\]"):
        SafetyFilter(hip_bundle.graphs["q_risk"], SafetyFilterCfg(), frame_dim=44, action_dim=ACTIONS)
    with pytest.raises(ConfigError, match="safety.filter.threshold: expected a risk in \\[0, 1\\], got 1.5"):
        SafetyFilterCfg(threshold=1.5)


class MotionRisk(nn.Module):
    """A critic that reads 2 frames: risk = sigmoid(20 (now[0] - before[0] - 0.5)), high when observation 0 rose by
    more than 0.5 since the frame before (what one frame cannot tell)."""

    history = 2

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        moved = obs[:, FRAME] - obs[:, 0]
        return torch.sigmoid(20.0 * (moved - 0.5)).unsqueeze(1) + 0.0 * action[:, :1]


def test_a_critic_with_a_history_reads_the_last_policy_frames_then_the_frame_measured_now(tmp_path):
    """As the critic was fitted (FrameHistory over the policy's steps): its input is the frames of the policy steps
    before the newest one, then the frame measured now; a fresh start (or a reset) repeats the frame measured now."""
    bundle = critic_bundle(tmp_path, MotionRisk(), history=2)
    assert bundle.manifest.graph("safety_critic").history == 2
    f = make_filter(bundle, threshold=0.5)
    zero = np.zeros(ACTIONS, np.float32)

    def at(x: float) -> np.ndarray:
        return np.r_[x, np.zeros(FRAME - 1)].astype(np.float32)

    assert f.decide(at(1.0), zero, now=0.0).risk < 0.01  # nothing observed yet: no motion to see
    f.observe(at(0.0))  # policy step 0: its frame is the newest; the history is that frame repeated
    assert f.decide(at(0.1), zero, now=0.002).risk < 0.01
    f.observe(at(0.1))  # policy step 1: step 0's frame is now the one before
    d = f.decide(at(1.0), zero, now=0.02)  # risen 1.0 since step 0: risky; shrinking the action cannot help
    assert d.risk > 0.99 and d.damp is not None
    np.testing.assert_array_equal(f.stack(at(1.0)), np.concatenate([at(0.0), at(1.0)])[None])
    assert f.decide(at(0.2), zero, now=0.022).risk < 0.01
    f.reset()  # a new run forgets the frames of the last one
    assert f.decide(at(1.0), zero, now=0.04).risk < 0.01
    with pytest.raises(BundleError, match=r"its history of 2 observation frame\(s\) \[2 x 44\]"):
        SafetyFilter(bundle.graphs["q_risk"], SafetyFilterCfg(), frame_dim=44, action_dim=ACTIONS)


def test_the_simulation_filter_gives_policy_and_critic_each_their_own_frames():
    """A teacher (one actor frame: 3 observations + 2 privileged values) under a critic that reads 2 frames: the
    filtered policy's input is 2 actor frames; the policy acts on the newest, the critic reads the observation part
    of both (oldest first)."""
    from robolearn.learn.filtered_policy import FilteredPolicy

    class Teacher(nn.Module):
        actor_dim, history = 5, 1

        def act_mean(self, x: torch.Tensor) -> torch.Tensor:
            self.seen = x
            return torch.zeros(x.shape[0], 2)

    class Critic(nn.Module):
        obs_dim, history = 6, 2

        def __init__(self) -> None:
            super().__init__()
            self.calls: list[torch.Tensor] = []

        def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
            self.calls.append(obs.clone())
            return torch.zeros(obs.shape[0], 1)

    teacher, critic = Teacher(), Critic()
    filtered = FilteredPolicy(teacher, critic, random_candidates=0)
    assert (filtered.history, filtered.actor_dim) == (2, 10)
    x = torch.arange(20.0).view(2, 10)  # per env: [old frame (5), new frame (5)]
    filtered.act_mean(x)
    assert torch.equal(teacher.seen, x[:, 5:])
    assert torch.equal(critic.calls[0], torch.cat([x[:, 0:3], x[:, 5:8]], dim=1))  # the commanded action's risk


# -- in the deploy runtime, on the Go2 twin ------------------------------------------------------------------
def runtime(bundle, **filter_cfg):
    from robolearn.deploy.profile import HardwareProfile, load_profile
    from robolearn.twin.sim_robot import SimRobot

    data = merge(to_dict(load_profile("go2")), {"stand": {"duration_s": 0.1}, "sim": {"start": "standing"},
                                                 "safety": {"policy_timeout_ms": 250, "filter": filter_cfg}})
    profile = from_dict(HardwareProfile, data, where="test profile")
    robot = SimRobot(profile.model, 1.0 / profile.control_hz, joint_names=profile.joint_names,
                     start=profile.sim.start, start_pose=profile.sim.start_pose)
    rt = DeployRuntime(bundle, profile, robot)
    rt.spin(0.02)
    assert rt.stand() == "stand"
    rt.spin(0.15)
    return rt


def test_the_runtime_filters_at_control_rate_and_reports_each_intervention(tmp_path):
    # risk over 0.2 when the FL hip action exceeds 0.022 (the walking policy's often do), 0.08 at 0
    bundle = critic_bundle(tmp_path, LinearRisk(W0, b=0.05, k=50.0))
    rt = runtime(bundle, threshold=0.2)
    try:
        assert rt.filter is not None
        rt.set_command([0.5, 0.0, 0.0])
        assert rt.run() == "run"
        rt.spin(1.0)
        assert rt.mode == Mode.RUN and not rt.trips  # it walks on, filtered
        log = rt.filter.log
        assert log.ticks >= 400 and log.replaced > 0  # every 500 Hz tick scored, some replaced
        assert rt.last_action[0] <= 0.0225  # what is applied (and observed next) is the filtered action
        from robolearn.deploy.session import session_report

        report = session_report(rt)["safety_filter"]
        assert report["replaced"] == log.replaced and report["interventions"][0]["kind"] == "replaced"
        assert report["interventions"][0]["risk"] > 0.2 >= report["interventions"][0]["chosen_risk"]
    finally:
        rt.close()


def test_the_runtime_gives_a_critic_with_a_history_the_frames_of_its_policy_steps(tmp_path):
    rt = runtime(critic_bundle(tmp_path, MotionRisk(), history=2), threshold=0.9)
    try:
        rt.set_command([0.5, 0.0, 0.0])
        assert rt.run() == "run"
        rt.spin(0.3)
        assert rt.mode == Mode.RUN and not rt.trips, rt.trips  # walking moves observation 0 far less than 0.5
        f = rt.filter
        assert f.log.ticks >= 100 and len(f._past) == 1  # the frame of the policy step before the newest
        np.testing.assert_array_equal(f._newest, rt.observations.frames[-1])  # the policy's newest frame
    finally:
        rt.close()


def test_a_nan_critic_or_a_missing_critic_graph_sends_the_runtime_to_damp(tmp_path):
    nan_bundle = critic_bundle(tmp_path / "nan", LinearRisk(W0, b=0.5, nan_at_zero_command=True))  # no command
    rt = runtime(nan_bundle)
    try:
        assert rt.run() == "run"
        rt.spin(0.1)
        assert rt.mode == Mode.DAMP and "safety critic returned nan" in rt.trips[-1].reason
    finally:
        rt.close()
    missing = critic_bundle(tmp_path / "missing", LinearRisk(W0, b=0.5))
    del missing.graphs["q_risk"]
    rt = runtime(missing)
    try:
        assert rt.run() == "run"
        rt.spin(0.1)
        assert rt.mode == Mode.DAMP
        assert "safety critic graph 'q_risk' of the bundle is not loaded" in rt.trips[-1].reason
    finally:
        rt.close()


# -- the same rule in simulation (learn/filtered_policy.py, torch, batched over envs) -------------------------
class Passthrough(nn.Module):
    """A 'policy' whose input is [frame (45), action (12)] and whose action is the last 12 numbers."""

    history, actor_dim = 1, FRAME + ACTIONS

    def act_mean(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, FRAME:]


def test_the_simulation_filter_takes_the_deploy_filters_decisions(hip_bundle):
    from robolearn.learn.filtered_policy import FilteredPolicy

    critic = LinearRisk(W0, b=0.5)
    critic.obs_dim = FRAME
    sim = FilteredPolicy(Passthrough(), critic, threshold=0.2, random_candidates=0)
    deploy = make_filter(hip_bundle, threshold=0.2, random_candidates=0)
    rng = np.random.default_rng(1)
    frames = rng.standard_normal((64, FRAME)).astype(np.float32)
    actions = rng.uniform(-1.5, 1.5, (64, ACTIONS)).astype(np.float32)
    got = sim.act_mean(torch.from_numpy(np.concatenate([frames, actions], axis=1))).numpy()
    want = np.stack([deploy.decide(f, a, now=0.0).action for f, a in zip(frames, actions, strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-6)  # the same candidates, the same choice, per env
    stats = sim.stats()
    assert stats["scored"] == 64 and stats["replaced_fraction"] == deploy.log.replaced / 64 > 0.2
    assert stats["no_safe_candidate_fraction"] == 0.0
    with pytest.raises(ConfigError, match="threshold must be a risk in \\[0, 1\\]"):
        FilteredPolicy(Passthrough(), critic, threshold=2.0)


def test_closest_safe_takes_the_least_change_under_the_threshold_in_both_filters(hip_bundle):
    """`selection: closest_safe`: among the candidates under the threshold the one nearest the command (a pressing
    arm eases off instead of lifting away); lowest_risk takes the safest. The simulation filter agrees per env."""
    from robolearn.deploy.profile import SELECTIONS as DEPLOY_SELECTIONS
    from robolearn.learn.filtered_policy import SELECTIONS, FilteredPolicy

    assert SELECTIONS == DEPLOY_SELECTIONS
    closest = make_filter(hip_bundle, threshold=0.2, shrink_steps=8, selection="closest_safe")
    lowest = make_filter(hip_bundle, threshold=0.2, shrink_steps=8)
    rng = np.random.default_rng(3)
    frame = np.zeros(FRAME, dtype=np.float32)
    checked = 0
    for _ in range(200):
        a = rng.uniform(-1.5, 1.5, ACTIONS).astype(np.float32)
        a[0] = rng.uniform(0.5, 1.5)  # risky: risk(a) > 0.2 needs a[0] > 0.5 - ln(4)/10
        seed = int(rng.integers(1 << 30))
        closest.rng, lowest.rng = np.random.default_rng(seed), np.random.default_rng(seed)  # the same candidates
        cands = closest.candidates(a)
        closest.rng = np.random.default_rng(seed)
        dc, dl = closest.decide(frame, a, now=0.0), lowest.decide(frame, a, now=0.0)
        assert dc.replaced and dl.replaced and dc.chosen_risk <= 0.2 and dl.chosen_risk <= 0.2
        safe = [c for c in cands if risk_of(c, W0, 0.5) <= 0.2 - 1e-4]
        nearest = min(np.linalg.norm(c - a) for c in safe)
        assert np.linalg.norm(dc.action - a) == pytest.approx(nearest, abs=1e-5)  # the least change that is safe
        assert dl.chosen_risk <= dc.chosen_risk + 1e-7 and np.linalg.norm(dl.action - a) >= nearest - 1e-5
        checked += np.linalg.norm(dl.action - a) > nearest + 1e-3
    assert checked > 100  # the two rules differ on most actions
    with pytest.raises(ConfigError, match="selection: expected one of lowest_risk, closest_safe"):
        SafetyFilterCfg(selection="nearest")

    critic = LinearRisk(W0, b=0.5)
    critic.obs_dim = FRAME
    sim = FilteredPolicy(Passthrough(), critic, threshold=0.2, random_candidates=0, shrink_steps=8,
                         selection="closest_safe")
    deploy = make_filter(hip_bundle, threshold=0.2, random_candidates=0, shrink_steps=8, selection="closest_safe")
    frames = rng.standard_normal((64, FRAME)).astype(np.float32)
    actions = rng.uniform(-1.5, 1.5, (64, ACTIONS)).astype(np.float32)
    got = sim.act_mean(torch.from_numpy(np.concatenate([frames, actions], axis=1))).numpy()
    want = np.stack([deploy.decide(f, a, now=0.0).action for f, a in zip(frames, actions, strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert sim.stats()["replaced_fraction"] > 0.2
    with pytest.raises(ConfigError, match="selection must be one of"):
        FilteredPolicy(Passthrough(), critic, selection="nearest")


def test_shrinking_toward_the_measured_joints_in_both_filters(hip_bundle):
    """`shrink_toward: measured`: the shrunk candidates lie between the command and the action that holds the
    measured joints (a joint impedance's push scales down with them); the simulation filter, bound to a real task,
    takes the deploy filter's decisions given the same measured pose."""
    from robolearn.learn.filtered_policy import FilteredPolicy
    from robolearn.sim.tasks import make_task

    task = make_task("go2-flat", 32, seed=4)
    for _ in range(5):  # the robot settles away from its default pose
        task.step(torch.zeros(32, task.num_actions))
    measured = task.measured_action()
    torch.testing.assert_close(task.default_joint_pos + task.cfg.action_scale * measured, task.joint_pos)
    critic = LinearRisk(W0, b=0.5)
    critic.obs_dim = FRAME
    sim = FilteredPolicy(Passthrough(), critic, threshold=0.2, random_candidates=0, shrink_steps=8,
                         selection="closest_safe", shrink_toward="measured")
    with pytest.raises(ConfigError, match="bind\\(task\\) first"):
        sim.act_mean(torch.zeros(1, FRAME + ACTIONS))
    sim.bind(task)
    deploy = make_filter(hip_bundle, threshold=0.2, random_candidates=0, shrink_steps=8, selection="closest_safe",
                         shrink_toward="measured")
    rng = np.random.default_rng(5)
    frames = rng.standard_normal((32, FRAME)).astype(np.float32)
    actions = rng.uniform(-1.5, 1.5, (32, ACTIONS)).astype(np.float32)
    got = sim.act_mean(torch.from_numpy(np.concatenate([frames, actions], axis=1))).numpy()
    decisions = [deploy.decide(f, a, now=0.0, measured=m)
                 for f, a, m in zip(frames, actions, measured.numpy(), strict=True)]
    damped = np.array([d.damp is not None for d in decisions])  # no candidate under it: the robot damps, ...
    want = np.stack([d.action for d in decisions])
    np.testing.assert_allclose(got[~damped], want[~damped], atol=1e-5)
    assert sim.stats()["no_safe_candidate_fraction"] == damped.mean()  # ... a simulated episode counts it
    replaced = (np.abs(got - actions).max(axis=1) > 1e-6) & ~damped
    assert replaced.sum() > 5
    for g, a, m in zip(got[replaced], actions[replaced], measured.numpy()[replaced], strict=True):
        k = (g - m)[0] / (a - m)[0]  # on the segment from the measured action to the command
        np.testing.assert_allclose(g, m + k * (a - m), atol=1e-5)
        assert 0.0 <= k < 1.0
    with pytest.raises(ValueError, match="needs the measured action"):
        deploy.decide(frames[0], actions[0], now=0.0)
    push = make_task("panda-push", 1)
    with pytest.raises(ConfigError, match="not joint position targets"):
        FilteredPolicy(Passthrough(), critic, shrink_toward="measured").bind(push)
    with pytest.raises(ConfigError, match="shrink_toward: expected one of default, measured"):
        SafetyFilterCfg(shrink_toward="home")


def test_the_simulation_filter_lowers_a_tasks_joint_impedance_as_the_runtime_lowers_its_gains(hip_bundle):
    """Bound to a real task, the simulation filter scales each env's actuator stiffness and damping (on top of its
    randomized motor strength) by the deploy filter's `gain_scale` at the same times: down while the risk is over
    impedance_threshold, a ramp back after, full again at a new episode."""
    from robolearn.learn.filtered_policy import FilteredPolicy
    from robolearn.sim.tasks import make_task

    task = make_task("go2-flat", 2, seed=3)
    strength = task.motor_strength.double().clone()
    nominal_kp, nominal_kd = task.model.actuator_gainprm[:, 0].copy(), -task.model.actuator_biasprm[:, 2].copy()

    def gains(env: int) -> tuple[np.ndarray, np.ndarray]:
        return (task.sim.model_field("actuator_gainprm", env)[:, 0] / (nominal_kp * float(strength[env])),
                -task.sim.model_field("actuator_biasprm", env)[:, 2] / (nominal_kd * float(strength[env])))

    critic = LinearRisk(W0, b=0.5)
    critic.obs_dim = FRAME
    cfg = {"threshold": 0.5, "impedance_threshold": 0.1, "impedance_scale": 0.4, "impedance_recover_s": 0.1}
    sim = FilteredPolicy(Passthrough(), critic, random_candidates=0, **cfg)
    sim.bind(task)
    deploy = make_filter(hip_bundle, random_candidates=0, **cfg)
    frames = torch.zeros(2, FRAME)
    risky = torch.zeros(2, ACTIONS)
    risky[0, 0] = 0.45  # risk 0.38: over the impedance threshold, under the filter's
    schedule = [risky] * 3 + [torch.zeros(2, ACTIONS)] * 8
    for k, actions in enumerate(schedule):
        now = k * task.dt
        a = sim.filter(frames, actions)
        torch.testing.assert_close(a, actions)  # never replaced: only the impedance acts
        deploy.decide(frames[0].numpy(), actions[0].numpy(), now=now)
        for got in gains(0):
            np.testing.assert_allclose(got, deploy.gain_scale(now), rtol=1e-6)
        for got in gains(1):  # the safe env keeps its full impedance
            np.testing.assert_allclose(got, 1.0, rtol=1e-6)
        if k == 3:
            assert 0.4 < float(task.gain_scale[0]) < 1.0  # ramping back
        task.step(a)
    assert float(task.gain_scale[0]) == 1.0
    sim.filter(frames, risky)
    task.step(risky)
    assert float(task.gain_scale[0]) == pytest.approx(0.4)
    task._reset_envs(torch.tensor([True, False]))  # a new episode starts at full impedance
    strength = task.motor_strength.double().clone()  # redrawn for env 0
    for got in gains(0):
        np.testing.assert_allclose(got, 1.0, rtol=1e-6)
    with pytest.raises(ConfigError, match="impedance_scale in \\(0, 1\\]"):
        FilteredPolicy(Passthrough(), critic, impedance_scale=0.0)
