"""Batched env API: shapes, groups, auto-reset, time-outs, determinism, randomization, backend physics."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from robolearn.errors import ConfigError
from robolearn.sim.tasks import load_task_cfg, make_task


def test_go2_observation_groups_and_shapes(go2_task):
    obs = go2_task.reset()
    assert set(obs) == {"policy", "privileged"}
    assert obs["policy"].shape == (8, 45) and obs["policy"].dtype == torch.float32
    assert obs["privileged"].shape == (8, 45 + 3 + 1 + 3 + 4)
    obs, reward, cost, terminated, truncated, info = go2_task.step(torch.zeros(8, 12))
    assert reward.shape == (8,) and terminated.shape == (8,) and truncated.shape == (8,)
    assert terminated.dtype == torch.bool and "time_outs" in info and "metrics" in info
    assert torch.isfinite(obs["policy"]).all() and torch.isfinite(obs["privileged"]).all()


def test_privileged_group_holds_the_randomized_parameters(go2_task):
    cfg = go2_task.cfg.randomization
    obs = go2_task.reset()["privileged"]
    friction, mass, strength = obs[:, 49], obs[:, 50], obs[:, 51]
    assert ((friction >= cfg.friction[0]) & (friction <= cfg.friction[1])).all()
    assert ((mass >= cfg.added_base_mass[0]) & (mass <= cfg.added_base_mass[1])).all()
    assert ((strength >= cfg.motor_strength[0]) & (strength <= cfg.motor_strength[1])).all()
    assert friction.std() > 0, "each env draws its own friction"
    # ... and the simulator really uses them, per env
    base = go2_task.model.body("base").id
    for env in range(3):
        model = go2_task.sim.models[env]
        assert model.geom_friction[0, 0] == pytest.approx(friction[env].item(), rel=1e-5)
        assert model.body_mass[base] == pytest.approx(go2_task.model.body_mass[base] + mass[env].item(), rel=1e-5)
        assert model.actuator_gainprm[0, 0] == pytest.approx(20.0 * strength[env].item(), rel=1e-5)


def test_policy_observation_is_noisy_privileged_is_not(go2_task):
    go2_task.reset()
    a, b = go2_task.observations(), go2_task.observations()
    assert not torch.equal(a["policy"], b["policy"])
    assert torch.equal(a["privileged"], b["privileged"])


def test_standing_robot_holds_its_pose_with_zero_actions():
    task = make_task("go2-flat", 4, seed=0, overrides={"randomization": {"push_interval_s": 0.0}})
    for _ in range(100):  # 2 s
        _, _, _, terminated, _, _ = task.step(torch.zeros(4, 12))
        assert not terminated.any()
    assert (task.base_height > 0.18).all()
    assert task.contacts.all(), "all four feet on the ground"
    task.close()


def test_fallen_robot_is_terminated_and_auto_reset(go2_task):
    go2_task.step(torch.zeros(8, 12))
    qpos, qvel = go2_task.sim.qpos.clone(), go2_task.sim.qvel.clone()
    qpos[0, 3:7] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # upside down
    qpos[0, 2] = 0.15
    go2_task.sim.set_state(torch.tensor([0]), qpos[:1], qvel[:1])
    obs, _, _, terminated, truncated, info = go2_task.step(torch.zeros(8, 12))
    assert terminated[0] and not truncated[0]
    assert not info["time_outs"][0]
    assert info["ended"]["mask"].tolist() == [True] + [False] * 7
    assert go2_task.episode_step[0] == 0, "the env restarted"
    assert go2_task.projected_gravity[0, 2] < -0.9, "the new episode starts upright"
    assert obs["policy"][0, 5] < -0.9  # projected gravity z in the returned observation is the new episode's


def test_body_on_the_ground_upright_is_terminated_by_base_contact(go2_task):
    """Base contact, not tilt: the robot is upright with its belly on the floor."""
    sid = go2_task.model.site("base_touch").id
    assert go2_task.model.site_size[sid].min() > 0.1  # wraps the fitted body box, not a point at the origin
    qpos, qvel = go2_task.sim.qpos.clone(), go2_task.sim.qvel.clone() * 0
    qpos[:, 3:7] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    qpos[:, 2] = 0.06
    go2_task.sim.set_state(torch.arange(8), qpos, qvel)
    touch = go2_task.sim.step(go2_task.action_to_ctrl(torch.zeros(8, 12)))[:, :, go2_task._base_touch_col]
    assert (touch.amax(dim=1) > 1.0).all()


def test_time_out_is_truncation_not_termination():
    task = make_task("panda-reach", 4, seed=0, overrides={"episode_length_s": 0.2})
    assert task.max_episode_steps == 10
    for _ in range(9):
        _, _, _, terminated, truncated, info = task.step(torch.zeros(4, 7))
        assert not terminated.any() and not truncated.any()
    _, _, _, terminated, truncated, info = task.step(torch.zeros(4, 7))
    assert truncated.all() and info["time_outs"].all() and not terminated.any()
    assert info["ended"]["mask"].all() and info["ended"]["success"].shape == (4,)
    stats = task.episode_stats()  # what the training log reads once per iteration
    assert stats["episodes"] == 4 and stats["episode_length_s"] == pytest.approx(0.2)
    assert stats["survival"] == 1.0 and "success" in stats and "reward/distance" in stats
    assert task.episode_stats() == {}  # read and cleared
    task.close()


def test_same_seed_same_trajectory_other_seed_differs():
    def rollout(seed: int) -> torch.Tensor:
        task = make_task("go2-flat", 4, seed=seed)
        g = torch.Generator().manual_seed(0)
        out = []
        for _ in range(30):
            obs, reward, *_ = task.step(0.5 * torch.randn(4, 12, generator=g))
            out.append(torch.cat([obs["privileged"], reward[:, None]], dim=1))
        task.close()
        return torch.stack(out)

    a, b, c = rollout(7), rollout(7), rollout(8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_backend_matches_plain_mujoco_stepping(reach_task):
    """mujoco.rollout in threads gives the trajectory of a plain mj_step loop, per env."""
    task = reach_task
    task.reset()
    env = 5
    model = task.sim.models[env]
    data = mujoco.MjData(model)
    data.qpos[:] = task.sim.qpos[env].numpy()
    data.qvel[:] = task.sim.qvel[env].numpy()
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        actions = torch.randn(8, 7, generator=g)
        ctrl = task.action_to_ctrl(actions)
        task.sim.step(ctrl)
        for sub in range(ctrl.shape[1]):
            data.ctrl[:] = ctrl[env, sub].numpy()
            mujoco.mj_step(model, data)
    np.testing.assert_allclose(task.sim.qpos[env].numpy(), data.qpos, atol=1e-5)


def test_action_latency_holds_the_previous_target_for_the_delayed_substeps():
    task = make_task("go2-flat", 2, seed=0, overrides={"action_delay_substeps": [2, 2]})
    first = task.action_to_ctrl(torch.ones(2, 12))
    assert torch.allclose(first[:, :2], task.default_joint_pos.double().expand(2, 2, 12))
    assert torch.allclose(first[:, 2:], (task.default_joint_pos + 0.25).double().expand(2, 2, 12))
    task.close()


def test_pushes_change_the_base_velocity():
    task = make_task("go2-flat", 8, seed=0, overrides={"randomization": {"push_interval_s": 0.04}})
    task.step(torch.zeros(8, 12))
    before = task.sim.qvel[:, :2].clone()
    task.step(torch.zeros(8, 12))  # step 2 = push
    assert (task.sim.qvel[:, :2] - before).abs().max() > 0.3
    task.close()


def test_bad_task_config_values_are_rejected():
    with pytest.raises(ConfigError, match="unknown task 'go3'; valid tasks: go2-flat, go2-nav, go2-nav-crouch, "
                                          "go2-nav-skill, "):
        load_task_cfg("go3")
    with pytest.raises(ConfigError, match="unknown field 'comands'"):
        load_task_cfg("go2-flat", {"comands": {}})
    with pytest.raises(ConfigError, match="unknown reward term 'jump'; valid terms: .*tracking_lin_vel"):
        make_task("go2-flat", 1, overrides={"rewards": {"jump": 1.0}})
    with pytest.raises(ConfigError, match="commands.lin_vel_x: expected 2 values"):
        load_task_cfg("go2-flat", {"commands": {"lin_vel_x": [1, 2, 3]}})
    with pytest.raises(ConfigError, match="unknown backend 'isaac'; valid backends: mujoco, mjwarp, mjx, pybullet"):
        make_task("go2-flat", 1, backend="isaac")


def test_sliding_feet_are_penalized_standing_feet_are_not():
    task = make_task("go2-flat", 4, seed=0, overrides={"randomization": {"push_interval_s": 0.0}})
    for _ in range(20):
        task.step(torch.zeros(4, 12))
    standing = task._reward_feet_slip()
    qvel = task.sim.qvel.clone()
    qvel[:, 0] = 1.0  # shove the body forward: the planted feet drag
    task.sim.set_state(torch.arange(4), task.sim.qpos.clone(), qvel)
    task.step(torch.zeros(4, 12))
    assert (standing < 0.05).all() and (task._reward_feet_slip() > 5 * standing + 0.1).all()
    task.close()


def test_targets_beyond_the_joint_range_are_penalized():
    """The deploy safety layer damps on targets beyond the joint range: without action bounds, the task penalizes
    them in training."""
    task = make_task("panda-reach", 8, seed=3, overrides={"action_bounds": "none"})
    try:
        task.step(torch.zeros(8, 7))
        assert torch.all(task._reward_target_limits() == 0)
        actions = torch.zeros(8, 7)
        actions[0, 5] = 8.0  # panda_joint6 target 1.571 + 0.5 * 8 = 5.57 rad, its range ends at 3.752
        task.step(actions)
        excess = task._reward_target_limits()
        assert excess[0] == pytest.approx(1.571 + 4.0 - 3.7525, abs=1e-3) and torch.all(excess[1:] == 0)
    finally:
        task.close()


def test_action_bounds_keep_targets_in_the_range_as_the_bundle_and_runtime_apply_them(tmp_path):
    """`action_bounds: joint_range` (panda-reach): an action pushing far beyond a joint's range saturates at the
    range end, in training (no fault, no target_limits penalty, last_action the bounded action) and in the deploy
    runtime's clip from the exported bundle, the same numbers."""
    from robolearn.deploy.bundle import load_bundle
    from robolearn.export import export_policy
    from robolearn.learn.config import load_train_cfg
    from robolearn.learn.policy import ActorPolicy
    from robolearn.learn.train import make_ppo_runner

    task = make_task("panda-reach", 2, seed=0)
    try:
        assert task.cfg.action_bounds == "joint_range" and task.cfg.deploy_targets
        lo, hi = task.robot.joint_range.T
        actions = torch.zeros(2, 7)
        actions[0] = torch.tensor([-40.0, 9.0, 0.1, 30.0, -7.0, -9.0, 40.0])  # several far beyond, both sides
        _, _, _, terminated, _, _ = task.step(actions)
        applied = task.actions[0].double().numpy()
        targets = task.default_joint_pos.double().numpy() + task.cfg.action_scale * applied
        assert not terminated.any() and torch.all(task._reward_target_limits() <= 1e-6)  # float rounding
        assert np.all(targets >= lo - 1e-5) and np.all(targets <= hi + 1e-5)
        np.testing.assert_allclose(targets[[1, 3, 5]], [hi[1], hi[3], lo[5]], atol=1e-5)  # saturated at the ends
        assert applied[2] == pytest.approx(0.1)  # within bounds: untouched
        assert torch.equal(task.observations()["policy"][0, -7:], task.actions[0])  # last_action: as applied
    finally:
        task.close()
    cfg = load_train_cfg("panda-reach", overrides={"num_envs": 2, "steps_per_env": 2})
    runner = make_ppo_runner(cfg, tmp_path / "run")
    try:
        export_policy(ActorPolicy(runner.algorithm.policy), "panda-reach", tmp_path / "bundle", record_envs=2,
                      record_steps=10)
    finally:
        runner.close()
    bundle = load_bundle(tmp_path / "bundle")
    np.testing.assert_allclose(bundle.manifest.apply_action_clip(actions[0].numpy()), applied, atol=1e-5)


def test_deploy_targets_follow_the_deploy_safety_layer_tick_by_tick():
    """panda-reach trains with the deploy runtime's target path: interpolation between policy steps, the range
    clamp and the rate limit. Cross-checked against the deploy SafetyLayer itself, run substep by substep."""
    from robolearn.deploy.profile import load_profile
    from robolearn.deploy.safety import SafetyLayer

    task = make_task("panda-reach", 2, seed=0, overrides={"deploy_targets": True, "action_bounds": "none"})
    try:
        cfg = task.cfg
        profile = load_profile("panda")
        assert cfg.deploy_targets and cfg.max_target_rate == profile.safety.max_target_rate
        assert cfg.target_limit_margin == profile.safety.target_limit_margin
        lo, hi = task.robot.joint_range.T
        safety = SafetyLayer(profile.safety, joint_names=list(task.robot.joint_names),
                             pos_limits=task.robot.joint_range,
                             vel_limits=np.full(7, 1e9), torque_limits=np.full(7, 1e9), control_dt=cfg.sim_dt,
                             legged=False)
        actions = torch.tensor([[0.4, -1.5, 0.0, 0.01, 0.0, 4.5, -0.2], [0.0] * 7])  # joint6 -> 3.82: clamped
        task.targets[0, 5] = 3.745  # 7.5 mrad below the range end: the clamp acts within the first step
        for _ in range(3):
            previous = task.targets[0].double().numpy().copy()
            path = task.action_to_ctrl(actions)[0].numpy()  # [decimation, 7]
            goal = (task.default_joint_pos + cfg.action_scale * actions)[0].double().numpy()
            expected, safe = [], previous
            for k in range(1, cfg.decimation + 1):
                target = previous + (goal - previous) * k / cfg.decimation
                safe, reason = safety.filter_targets(target, safe, safe, np.zeros(7), np.zeros(7), np.zeros(7))
                assert reason is None
                expected.append(safe)
            np.testing.assert_allclose(path, np.array(expected), atol=1e-6)
        assert np.all(path >= lo - 1e-6) and np.all(path <= hi + 1e-6) and path[-1, 5] == pytest.approx(hi[5])
        assert path[-1, 1] == pytest.approx(previous[1] - 1.0 * cfg.sim_dt * cfg.decimation, abs=1e-6)
    finally:
        task.close()


def test_a_target_the_deploy_runtime_would_trip_on_ends_the_episode():
    task = make_task("panda-reach", 2, seed=0, overrides={"deploy_targets": True, "action_bounds": "none"})
    try:
        actions = torch.zeros(2, 7)
        # panda_joint6: default 1.571 + 0.5 x 5 = 4.07 rad, beyond the range end 3.752 by more than the 0.3 margin
        actions[0, 5] = 5.0
        _, _, _, terminated, _, _ = task.step(actions)
        assert terminated.tolist() == [True, False]
        actions[0, 5] = 4.3  # 3.72 rad: inside the range, kept
        _, _, _, terminated, _, _ = task.step(actions)
        assert terminated.tolist() == [False, False]
    finally:
        task.close()
