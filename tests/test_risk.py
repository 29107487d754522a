"""The safety critic Q_risk (learn/risk_critic.py): learned beside PPO (`safety_critic.enabled`) or fitted to a
trained policy (`robolearn risk`), exported as the bundle's safety_critic graph, and run as the safety filter in
simulation (`robolearn eval --safety-filter`). Toy problems are Gymnasium envs with `info["cost"]`; the rest is
go2-flat on MuJoCo, the real CLI in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from robolearn.errors import BundleError, ConfigError
from robolearn.learn.config import load_train_cfg
from robolearn.learn.train import make_ppo_runner

WALL = "RobolearnTest/WallWalk-v0"


class WallWalk(gym.Env):
    """x += 0.1 a, reward a (go right), a violation (cost 1, the episode ends) when x passes 1; x starts uniform in
    [-1, 1]. Q_risk must be high just left of the wall moving right, low far from it or moving away."""

    observation_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1.0, 1.0))
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x += 0.1 * float(np.clip(action[0], -1.0, 1.0))
        hit = self.x > 1.0
        return np.array([self.x], np.float32), float(action[0]), hit, False, {"cost": float(hit)}


if WALL not in gym.registry:
    gym.register(id=WALL, entry_point=WallWalk, max_episode_steps=40)


def test_a_gym_env_cost_on_the_step_that_ends_its_episode_is_kept():
    """Same-step autoreset puts an ended env's last info under info["final_info"]; its cost must not be lost."""
    from robolearn.sim.tasks import make_task

    task = make_task(f"gym:{WALL}", 2, seed=0)
    try:
        total, ended = torch.zeros(2), torch.zeros(2)
        for _ in range(40):
            _, _, cost, terminated, _, _ = task.step(torch.ones(2, 1))
            total += cost
            ended += terminated.float()
        assert ended.sum() >= 2 and torch.equal(total, ended)  # one cost per wall hit, each on its last step
    finally:
        task.close()


def test_the_safety_critic_separates_risky_from_safe_state_actions_and_exports_into_the_bundle(tmp_path):
    cfg = load_train_cfg(f"gym:{WALL}", overrides={
        "max_iterations": 30, "steps_per_env": 64, "seed": 0, "task_overrides": {"normalize_reward": False},
        "ppo": {"epochs": 4, "minibatches": 4, "schedule": "fixed", "learning_rate": 1e-3},
        "safety_critic": {"enabled": True, "hidden": [32, 32], "gamma": 0.8, "learning_rate": 3e-3, "tau": 0.05},
        "eval": {"num_envs": 4}})
    runner = make_ppo_runner(cfg, tmp_path / "wall", log_interval=1000)
    runner.learn(progress=False)
    critic = runner.algorithm.risk.critic

    def q(x: float, a: float) -> float:
        with torch.no_grad():
            return float(critic(torch.tensor([[x]]), torch.tensor([[a]])))

    assert q(0.95, 1.0) > 0.8  # next step is past the wall
    # the same state moving away: the policy (going right) comes back in ~2 steps, so about gamma^2 = 0.64
    assert q(0.95, -1.0) < q(0.95, 1.0) - 0.1
    assert q(-0.8, 0.0) < 0.2  # far from the wall (18 steps at full speed; gamma 0.8)
    assert q(0.2, 0.0) < q(0.6, 0.0) < q(0.9, 0.0)  # the closer, the riskier
    ckpt = torch.load(tmp_path / "wall" / "checkpoints" / "model.pt", weights_only=False)
    assert "risk_critic" in ckpt
    from robolearn.export import export_run

    with pytest.raises(BundleError, match="a Gymnasium env has no robot to deploy to"):
        export_run(tmp_path / "wall")


def test_a_trained_safety_critic_is_exported_as_the_bundles_safety_critic_graph(tmp_path):
    from robolearn.deploy.bundle import load_bundle
    from robolearn.export import export_run
    from robolearn.learn.risk_critic import RiskCritic

    cfg = load_train_cfg("go2-flat", overrides={
        "num_envs": 8, "steps_per_env": 8, "max_iterations": 2, "ppo": {"minibatches": 2, "epochs": 1},
        "safety_critic": {"enabled": True, "hidden": [16]}, "eval": {"num_envs": 2},
        "task_overrides": {"episode_length_s": 0.2}})
    make_ppo_runner(cfg, tmp_path / "go2", log_interval=1000).learn(progress=False)
    export_run(tmp_path / "go2", tmp_path / "bundle", record_envs=2, record_steps=5)
    bundle = load_bundle(tmp_path / "bundle")
    spec = bundle.manifest.graph("safety_critic")
    assert spec.name == "q_risk" and spec.rate_hz == 200.0  # the control rate it trained with
    ckpt = torch.load(tmp_path / "go2" / "checkpoints" / "model.pt", weights_only=False)
    critic = RiskCritic.from_checkpoint(ckpt["risk_critic"])
    assert (critic.obs_norm.mean.shape[0], ckpt["risk_critic"]["hidden"]) == (45, [16])
    rng = np.random.default_rng(0)
    obs, act = rng.standard_normal((5, 45)).astype(np.float32), rng.standard_normal((5, 12)).astype(np.float32)
    with torch.no_grad():
        want = critic(torch.from_numpy(obs), torch.from_numpy(act)).numpy()
    got = bundle.graphs["q_risk"].run({"obs": obs, "action": act})["q_risk"]
    np.testing.assert_allclose(got, want, atol=1e-5)


def robolearn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True, timeout=600)


def test_robolearn_risk_fits_a_critic_to_a_trained_policy_and_eval_filters_with_it(tmp_path):
    cfg = load_train_cfg("go2-flat", overrides={
        "num_envs": 8, "steps_per_env": 8, "max_iterations": 1, "ppo": {"minibatches": 2, "epochs": 1},
        "eval": {"num_envs": 2}, "task_overrides": {"episode_length_s": 0.5}})
    make_ppo_runner(cfg, tmp_path / "go2", log_interval=1000).learn(progress=False)
    fit = robolearn("risk", str(tmp_path / "go2"), "--iterations", "2", "--num-envs", "8", "--steps-per-env", "8",
                    "--set", "hidden=[16]", "--runs-dir", str(tmp_path), "--no-progress")
    assert fit.returncode == 0, fit.stderr[-2000:]
    source = torch.load(tmp_path / "go2" / "checkpoints" / "model.pt", weights_only=False)
    fitted = torch.load(tmp_path / "go2-risk" / "checkpoints" / "model.pt", weights_only=False)
    assert fitted["format"] == "robolearn-ppo" and fitted["risk_critic"]["hidden"] == [16]
    assert all(torch.equal(v, fitted["model"][k]) for k, v in source["model"].items())  # the policy is untouched
    assert fitted["config"]["safety_critic"]["enabled"] and fitted["risk_fit"]["source"] == str(tmp_path / "go2")
    ev = robolearn("eval", str(tmp_path / "go2-risk"), "--safety-filter", "--episodes", "2")
    assert ev.returncode == 0, ev.stderr[-2000:]
    report = json.loads((tmp_path / "go2-risk" / "eval_mujoco_filtered.json").read_text())
    f = report["safety_filter"]
    assert f["threshold"] == 0.2 and f["scored"] >= 2 * 25 and 0.0 <= f["replaced_fraction"] <= 1.0
    no_critic = robolearn("eval", str(tmp_path / "go2"), "--safety-filter", "--episodes", "1")
    assert no_critic.returncode == 2 and "no safety critic in this checkpoint" in no_critic.stderr

    # a critic that reads the last 3 frames: fitted, filtering in simulation, exported with its history
    fit = robolearn("risk", str(tmp_path / "go2"), "--iterations", "1", "--num-envs", "8", "--steps-per-env", "8",
                    "--set", "hidden=[16]", "--set", "history=3", "--name", "go2-risk3", "--runs-dir",
                    str(tmp_path), "--no-progress")
    assert fit.returncode == 0, fit.stderr[-2000:]
    ev = robolearn("eval", str(tmp_path / "go2-risk3"), "--safety-filter", "--episodes", "2")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads((tmp_path / "go2-risk3" / "eval_mujoco_filtered.json").read_text())["safety_filter"]["scored"]
    from robolearn.deploy.bundle import load_bundle
    from robolearn.export import export_run
    from robolearn.learn.risk_critic import RiskCritic

    export_run(tmp_path / "go2-risk3", tmp_path / "bundle3", record_envs=2, record_steps=5)
    spec = load_bundle(tmp_path / "bundle3").manifest.graph("safety_critic")
    assert spec.history == 3 and spec.inputs[0].shape == [-1, 3 * 45]
    state = torch.load(tmp_path / "go2-risk3" / "checkpoints" / "model.pt", weights_only=False)["risk_critic"]
    assert RiskCritic.from_checkpoint(state).history == 3


def test_a_critic_that_reads_a_history_tells_what_one_frame_cannot():
    """x drifts by a hidden 0.1 or -0.1 per step (drawn per episode, x starts in [-1, 1]); passing x = 1 is a
    violation and ends the episode, passing -1 ends it safely. At x = 0.85 one frame cannot tell which way x goes;
    two frames can. The rollouts are stacked as `robolearn risk` stacks them (FrameHistory, a new episode
    repeating its first frame)."""
    from robolearn.learn.history import FrameHistory
    from robolearn.learn.risk_critic import RiskCriticLearner, SafetyCriticCfg

    def fit(history: int) -> RiskCriticLearner:  # (one frame sees the same input, 0.85, either way)
        torch.manual_seed(0)
        cfg = SafetyCriticCfg(enabled=True, hidden=[32, 32], gamma=0.8, learning_rate=3e-3, history=history)
        learner = RiskCriticLearner(1, 1, cfg, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        N, T = 128, 24
        x = 2.0 * torch.rand(N, generator=g) - 1.0
        v = torch.where(torch.rand(N, generator=g) < 0.5, 0.1, -0.1)
        frames = FrameHistory(N, 1, history)
        fresh = torch.zeros(N, dtype=torch.bool)
        for _ in range(40):
            obs, costs, dones = torch.zeros(T, N, history), torch.zeros(T, N), torch.zeros(T, N)
            for t in range(T):
                obs[t] = frames.push(x.unsqueeze(1), fresh)
                x = x + v
                costs[t], fresh = (x > 1.0).float(), x.abs() > 1.0
                dones[t] = fresh.float()
                restart = 2.0 * torch.rand(N, generator=g) - 1.0
                x = torch.where(fresh, restart, x)
                v = torch.where(fresh, torch.where(torch.rand(N, generator=g) < 0.5, 0.1, -0.1), v)
            learner.update(obs, torch.zeros(T, N, 1), costs, dones)
        return learner

    def q(learner: RiskCriticLearner, *xs: float) -> float:
        with torch.no_grad():
            return float(learner.critic(torch.tensor([xs]), torch.zeros(1, 1)))

    two = fit(2)
    toward, away = q(two, 0.75, 0.85), q(two, 0.95, 0.85)
    assert toward > 0.6 and away < 0.2  # toward the wall: a violation on the step after next (gamma); away: none
    assert q(two, -0.1, 0.0) < 0.3  # far from it (10 steps at gamma 0.8)
    with pytest.raises(ConfigError, match="safety_critic.history must be >= 1"):
        SafetyCriticCfg(history=0)
    beside_ppo = load_train_cfg("go2-flat", overrides={"safety_critic": {"enabled": True, "history": 3}})
    with pytest.raises(ConfigError, match=r"beside PPO the critic reads one frame; fit .* `robolearn risk RUN --set "
                                          r"history=3`"):
        make_ppo_runner(beside_ppo, "unused")


def test_the_critic_can_learn_from_named_cost_terms_only():
    from robolearn.learn.risk_critic import SafetyCriticCfg, violation_signal

    info = {"costs": {"fall": torch.tensor([1.0, 0.0, 0.0]), "torque_saturation": torch.tensor([0.0, 1.0, 0.0])}}
    total = torch.tensor([1.0, 0.1, 0.0])  # weighted: fall 1.0, torque_saturation 0.1
    torch.testing.assert_close(violation_signal(SafetyCriticCfg(), total, info), total)
    torch.testing.assert_close(violation_signal(SafetyCriticCfg(terms=["fall"]), total, info),
                               torch.tensor([1.0, 0.0, 0.0]))  # a saturated joint is not what this critic predicts
    with pytest.raises(ConfigError, match=r"safety_critic.terms: \['falls'\] are not cost terms of the task"):
        violation_signal(SafetyCriticCfg(terms=["falls"]), total, info)


class FirstActionRisk(torch.nn.Module):
    """risk(frame, a) = sigmoid(20 (a_0 - 0.2)): a known critic (risky where the first action exceeds ~0.2)."""

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.obs_dim = obs_dim

    def forward(self, frame: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(20.0 * (action[:, :1] - 0.2))


def test_the_filter_in_training_executes_and_stores_only_actions_under_the_threshold(tmp_path):
    """`safety_critic.filter_in_training`: PPO's sampled actions pass the safety filter before the task steps; the
    rollout stores the executed actions with their log-probabilities, and the iteration logs how many it replaced."""
    cfg = load_train_cfg("panda-wipe", overrides={
        "num_envs": 16, "steps_per_env": 8, "max_iterations": 2, "ppo": {"minibatches": 2, "epochs": 1},
        "network": {"init_std": 1.0}, "eval": {"num_envs": 2}, "task_overrides": {"episode_length_s": 2.0},
        "safety_critic": {"enabled": True, "hidden": [16], "filter_in_training": True, "filter_threshold": 0.5}})
    runner = make_ppo_runner(cfg, tmp_path / "shield", log_interval=1000)
    ppo = runner.algorithm
    assert ppo.shield is not None and ppo.shield.critic is ppo.risk.critic  # the critic being learned
    ppo.shield.critic = FirstActionRisk(ppo.risk.critic.obs_dim)
    obs = runner.task.observations()
    executed = ppo.act(obs)
    assert (executed[:, 0] <= 0.2 + 1e-6).all()  # risk <= 0.5 exactly where a_0 <= 0.2
    actor_obs, _, stored, log_prob, *_ = ppo._step
    torch.testing.assert_close(stored, executed)
    torch.testing.assert_close(log_prob, ppo.policy.distribution(actor_obs).log_prob(executed).sum(-1))
    stats = ppo.shield.stats(reset=True)
    assert 0.2 < stats["replaced_fraction"] < 1.0 and stats["no_safe_candidate_fraction"] == 0.0  # 0 is safe
    runner.learn(progress=False)  # end to end with the learned critic: the filter statistics are logged
    with pytest.raises(ConfigError, match="filter_selection one of lowest_risk, closest_safe"):
        load_train_cfg("panda-wipe", overrides={"safety_critic": {"filter_selection": "nearest"}})


def test_robolearn_risk_also_executes_the_filters_candidates_toward_the_measured_joints(tmp_path):
    """`safety_critic.candidate_fraction`: the fit executes filter-like candidates in that fraction of envs (here
    all of them), half shrunk toward the measured joints, half perturbed, so that the critic learns their risk."""
    from robolearn.learn.risk_fit import RiskFit, make_risk_fit_runner
    from robolearn.sim.tasks import make_task

    cfg = load_train_cfg("panda-wipe", overrides={
        "num_envs": 16, "steps_per_env": 4, "max_iterations": 1, "ppo": {"minibatches": 2, "epochs": 1},
        "eval": {"num_envs": 2}, "task_overrides": {"episode_length_s": 1.5}})
    make_ppo_runner(cfg, tmp_path / "wipe", log_interval=1000).learn(progress=False)
    runner = make_risk_fit_runner(tmp_path / "wipe", tmp_path / "wipe-risk", num_envs=64, steps_per_env=4,
                                  iterations=1, critic={"candidate_fraction": 1.0, "candidate_noise": 0.5,
                                                        "shrink_toward": "measured", "hidden": [16]})
    fit, task = runner.algorithm, runner.task
    assert len(set(task.episode_step.tolist())) > 20  # the envs start at random phases of their first episode
    obs = task.observations()
    torch.manual_seed(7)
    executed = fit.act(obs)
    torch.manual_seed(7)  # the same draws, in the documented order: the policy's sample, then the candidates
    sample = fit.policy.distribution(fit.policy.actor_input(obs)).sample()
    n = sample.shape[0]
    torch.rand(n)  # which envs (all, at fraction 1)
    shrink = torch.rand(n, 1) < 0.5
    u = torch.rand(n, 1)
    measured = task.measured_action()
    expected_shrunk = measured + u * (sample - measured)
    torch.testing.assert_close(executed[shrink[:, 0]], expected_shrunk[shrink[:, 0]])
    perturbed = executed[~shrink[:, 0]] - sample[~shrink[:, 0]]
    assert 0.3 < float(perturbed.std()) < 0.7  # perturbed by candidate_noise
    assert 10 < int(shrink.sum()) < 54
    runner.learn(progress=False)
    as_typed = make_risk_fit_runner(tmp_path / "wipe", tmp_path / "typed", num_envs=2, iterations=1,
                                    critic={"learning_rate": "3e-4"})  # --set learning_rate=3e-4: YAML gives a str
    assert as_typed.algorithm.learner.cfg.learning_rate == 3e-4
    with pytest.raises(ConfigError, match=r"safety_critic \(robolearn risk --set\).learning_rate: expected a "
                                          r"number, got 'fast'"):
        make_risk_fit_runner(tmp_path / "wipe", tmp_path / "bad", num_envs=2, critic={"learning_rate": "fast"})
    with pytest.raises(ConfigError, match="not joint position targets"):  # end-effector actions hold no joints
        RiskFit(fit.policy, {}, fit.learner, num_envs=1, steps_per_env=2, checkpoint_format="robolearn-ppo",
                task=make_task("panda-push", 1))


def test_the_filter_in_simulation_takes_the_runs_own_settings_unless_given():
    from robolearn.learn.eval_run import filter_settings

    fitted = {"config": {"safety_critic": {"filter_threshold": 0.6, "filter_selection": "closest_safe",
                                           "shrink_toward": "measured", "filter_shrink_steps": 16}}}
    impedance = {"impedance_threshold": 0.1, "impedance_scale": 0.5, "impedance_recover_s": 0.5}  # the deploy's
    assert filter_settings(fitted, {"threshold": None, "selection": None, "shrink_toward": None}) == {
        "threshold": 0.6, "selection": "closest_safe", "shrink_toward": "measured", "shrink_steps": 16, **impedance}
    assert filter_settings(fitted, {"threshold": 0.3})["threshold"] == 0.3  # an option given on the command line
    assert filter_settings(fitted, {"impedance_threshold": 1.0})["impedance_threshold"] == 1.0  # off
    older = {"config": {"safety_critic": {"enabled": True}}}  # a run from before these settings: deploy defaults
    assert filter_settings(older, {}) == {"threshold": 0.2, "selection": "lowest_risk", "shrink_toward": "default",
                                          "shrink_steps": 4, **impedance}
    with pytest.raises(ConfigError, match="filter_impedance_scale in \\(0, 1\\]"):
        filter_settings({"config": {"safety_critic": {"filter_impedance_scale": 2.0}}}, {})


def test_a_replay_buffer_keeps_the_critic_from_forgetting_what_the_filter_now_avoids():
    """The filter in the loop: first the policy presses (every step violates), then the filter eases every action off
    (no violation). Fitted on the newest rollout only, the critic forgets that pressing violates and would let it
    through again; with the older rollouts replayed it still knows."""
    from robolearn.learn.risk_critic import RiskCriticLearner, SafetyCriticCfg

    def fit(replay: int) -> tuple[float, float, float]:
        torch.manual_seed(0)
        cfg = SafetyCriticCfg(enabled=True, hidden=[32, 32], gamma=0.5, learning_rate=3e-3, replay_rollouts=replay)
        learner = RiskCriticLearner(1, 1, cfg, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        T, N = 9, 64

        def rollout(low: float, high: float, violate: bool):
            obs = torch.rand(T, N, 1, generator=g)
            actions = low + (high - low) * torch.rand(T, N, 1, generator=g)
            return obs, actions, torch.full((T, N), float(violate)), torch.ones(T, N)

        for _ in range(20):
            learner.update(*rollout(0.5, 1.0, True))
        for _ in range(40):
            stats = learner.update(*rollout(-1.0, 0.0, False))
        x = torch.rand(64, 1, generator=g)
        with torch.no_grad():
            pressing = learner.critic(x, torch.full((64, 1), 0.8)).mean().item()
            easing = learner.critic(x, torch.full((64, 1), -0.5)).mean().item()
        return pressing, easing, stats["risk/replay_transitions"]

    pressing, easing, stored = fit(1)
    assert pressing < 0.5 and stored == 8 * 64  # forgot: the filter would pass a press again
    pressing, easing, stored = fit(60)
    assert pressing > 0.9 and easing < 0.05 and stored == 60 * 8 * 64
    ring = RiskCriticLearner(1, 1, SafetyCriticCfg(replay_rollouts=2, epochs=1, minibatches=1),
                             generator=torch.Generator().manual_seed(0))
    for k in range(3):  # the ring keeps the newest 2 rollouts: the third overwrites the first
        ring.update(torch.full((3, 4, 1), float(k)), torch.zeros(3, 4, 1), torch.zeros(3, 4), torch.zeros(3, 4))
    assert sorted(ring._buffer["s"].unique().tolist()) == [1.0, 2.0]
    with pytest.raises(ConfigError, match="replay_rollouts"):
        SafetyCriticCfg(replay_rollouts=0)
