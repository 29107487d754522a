"""go2-nav and the two-level hierarchy: the scenario library (planned paths clear of obstacles, held-out seeds),
per-env obstacle layouts that the robot collides with, the waypoint and scan observations, the pursuit command,
success, and the high level over a frozen skill (acts exactly every K steps, reward summed over its period, an
episode ending inside a period ends that env's transition there; the shipped go2-flat bundle walks where it is
commanded)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robolearn.config import declarations_root
from robolearn.errors import CheckpointError, ConfigError
from robolearn.learn.config import load_train_cfg
from robolearn.learn.eval_run import evaluate_run
from robolearn.learn.hierarchical import HighLevelTask, load_skill
from robolearn.learn.train import make_ppo_runner
from robolearn.learn.warm_start import warm_start
from robolearn.planning import OccupancyGrid
from robolearn.sim.tasks import make_task
from robolearn.sim.tasks.locomotion import POLICY_OBSERVATIONS
from robolearn.sim.tasks.navigation import OPEN, LayoutCfg, PlannerCfg, generate_scenarios

SMALL = {"layout": {"count": 8}}
SKILL_GROUP = [{"term": o.term, "scale": o.scale, "noise": o.noise} for o in POLICY_OBSERVATIONS]


def _clear(occupied: np.ndarray, origin: tuple[float, float], res: float, path: np.ndarray, radius: float) -> bool:
    """Every point of the polyline (sampled every 2 cm) is at least `radius` - one cell from occupied cells."""
    grid = OccupancyGrid(occupied, res, origin).inflate(max(radius - res, 0.0))
    for a, b in zip(path[:-1], path[1:], strict=True):
        for x, y in np.linspace(a, b, max(2, math.ceil(np.linalg.norm(b - a) / 0.02) + 1)):
            row, col = grid.to_cell(x, y)
            if not grid.contains(row, col) or grid.occupied[row, col]:
                return False
    return True


def test_scenarios_are_planned_around_obstacles_and_held_out_by_seed() -> None:
    layout, planner = LayoutCfg(count=20, seed=3), PlannerCfg()
    s = generate_scenarios(layout, planner)
    assert s.path.shape == (20, planner.max_points, 2)
    for i in range(20):
        path = s.path[i, :s.length[i]]
        np.testing.assert_allclose(path[0], s.start[i])
        np.testing.assert_allclose(path[-1], s.goal[i])
        assert np.all(np.linalg.norm(np.diff(path, axis=0), axis=1) <= planner.spacing + 1e-9)
        assert _clear(s.occupied[i], s.origin, s.resolution, path, planner.inflate)
        # the wall across the middle blocks the straight line wherever its passage is not on it
    assert (s.length > 2).all()
    again = generate_scenarios(LayoutCfg(count=20, seed=3), planner)
    np.testing.assert_array_equal(again.boxes, s.boxes)
    held_out = generate_scenarios(LayoutCfg(count=20, seed=4), planner)
    assert not np.allclose(held_out.boxes, s.boxes)
    straight = generate_scenarios(LayoutCfg(count=4, seed=3), PlannerCfg(kind="straight"))
    for i in range(4):
        path = straight.path[i, :straight.length[i]]
        direction = (straight.goal[i] - straight.start[i]) / np.linalg.norm(straight.goal[i] - straight.start[i])
        offsets = path - straight.start[i]
        np.testing.assert_allclose(offsets[:, 0] * direction[1] - offsets[:, 1] * direction[0], 0.0, atol=1e-9)


def test_layouts_reject_bad_settings() -> None:
    with pytest.raises(ConfigError, match="passage_width"):
        LayoutCfg(size=(6.0, 3.0), passage_width=(0.5, 3.5))
    with pytest.raises(ConfigError, match="too narrow"):
        generate_scenarios(LayoutCfg(count=2, passage_width=(0.3, 0.3)), PlannerCfg(inflate=0.3))
    with pytest.raises(ConfigError, match="planner.kind"):
        PlannerCfg(kind="rrt")  # type: ignore[arg-type]


def test_obstacles_are_laid_out_per_env_and_stop_the_robot() -> None:
    task = make_task("go2-nav", 4, seed=1, overrides={**SMALL, "randomization": {"push_interval_s": 0}})
    assert len(set(task.scenario.tolist())) > 1
    piece = task._lib_geom_xy[task.scenario][:, 4]  # each env's first wall piece (center), in its own model
    wall_id = task.model.geom("obstacle4").id
    for env in range(4):
        np.testing.assert_allclose(task.sim.model_field("geom_pos", env)[wall_id, :2], piece[env].numpy())
    # Each base starts 0.45 m before its own wall piece and is thrown at it at 2 m/s: the wall stops it.
    qpos, qvel = task.sim.qpos.clone(), torch.zeros_like(task.sim.qvel)
    qpos[:, 0] = piece[:, 0].double() - 0.45
    qpos[:, 1] = (piece[:, 1] - piece[:, 1].sign() * 1.2).double()  # inside the arena, 0.3 m from the piece's end
    qpos[:, 3:7] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    qvel[:, 0] = 2.0
    task.sim.set_state(torch.ones(4, dtype=torch.bool), qpos, qvel)
    for _ in range(40):  # 0.8 s: free, the base would travel well past the wall
        task.sim.step(task.default_joint_pos.double().expand(4, 5, 12).clone())
    assert (task.sim.qpos[:, 0] < piece[:, 0].double() - 0.05).all(), task.sim.qpos[:, 0] - piece[:, 0]


def test_waypoints_scan_pursuit_and_success() -> None:
    task = make_task("go2-nav", 3, seed=2, overrides={**SMALL, "start_yaw_noise": 0.0, "noise_scale": 0.0})
    terms = task.observation_terms()
    # facing along the path's first segment: the tracked waypoint lies ahead, on the x axis of the base
    wp = terms["waypoints"].view(3, -1, 2)
    assert (wp[:, 0, 0] > 0.3).all() and (wp[:, 0, 1].abs() < 0.05).all(), wp
    # rotating the base by +90 degrees puts the waypoint on its right (negative y) and the pursuit turns right
    qpos = task.sim.qpos.clone()
    yaw = torch.atan2(task.path[:, 1, 1] - task.path[:, 0, 1], task.path[:, 1, 0] - task.path[:, 0, 0])
    qpos[:, 3], qpos[:, 6] = torch.cos((yaw + math.pi / 2) / 2).double(), torch.sin((yaw + math.pi / 2) / 2).double()
    task.sim.set_state(torch.ones(3, dtype=torch.bool), qpos, torch.zeros_like(task.sim.qvel))
    task.update_state()
    wp = task.observation_terms()["waypoints"].view(3, -1, 2)
    assert (wp[:, 0, 1] < -0.3).all() and (wp[:, 0, 0].abs() < 0.05).all(), wp
    assert (task.commands[:, 2] < 0).all() and (task.commands[:, 0].abs() < 0.05).all(), task.commands
    # facing +x at the start, the scan sees the arena's end wall 0.6 m behind and nothing just in front
    task.reset()
    qpos = task.sim.qpos.clone()
    qpos[:, 3:7] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    task.sim.set_state(torch.ones(3, dtype=torch.bool), qpos, torch.zeros_like(task.sim.qvel))
    task.update_state()
    scan = task.observation_terms()["occupancy_scan"]
    points = task._scan_points
    behind = (points[:, 0] < -0.7) & (points[:, 1].abs() < 0.2)
    front = (points[:, 0] > 0.1) & (points[:, 0] < 0.5) & (points[:, 1].abs() < 0.2)
    assert (scan[:, behind] == 1).all() and (scan[:, front] == 0).all()
    # at the goal: success, zero command, and the episode's metrics say so when it times out
    qpos = task.sim.qpos.clone()
    qpos[:, :2] = task.goal.double()
    task.sim.set_state(torch.ones(3, dtype=torch.bool), qpos, torch.zeros_like(task.sim.qvel))
    task.episode_step[:] = 10
    task.update_state()
    assert task.success().all() and (task.commands == 0).all()
    task.episode_step[:] = task.max_episode_steps - 1
    *_, info = task.step(torch.zeros(3, 12))
    ended = info["ended"]
    assert ended["mask"].all() and (ended["success"] == 1).all()
    torch.testing.assert_close(ended["time_to_goal_s"], torch.full((3,), 10 * task.dt))


def _skill_task(num_envs: int, **extra: object):
    overrides = {**SMALL, "command_source": "external", "observations": {"skill": SKILL_GROUP}, **extra}
    return make_task("go2-nav", num_envs, seed=0, overrides=overrides)


def test_high_level_acts_every_period_and_sums_rewards() -> None:
    period = 5
    # episodes of 1.5 periods: the second high-level step holds one episode's end inside it
    task = _skill_task(2, episode_length_s=task_dt() * period * 1.5, randomization={"push_interval_s": 0})
    calls: list[torch.Tensor] = []
    rewards: list[torch.Tensor] = []
    commands: list[torch.Tensor] = []

    def skill(obs: torch.Tensor) -> torch.Tensor:
        calls.append(obs)
        commands.append(task.commands.clone())
        return torch.zeros(obs.shape[0], 12)

    step = task.step

    def recorded_step(actions: torch.Tensor):
        out = step(actions)
        rewards.append(out[1].clone())
        return out

    task.step = recorded_step  # type: ignore[method-assign]
    high = HighLevelTask(task, skill, period=period, command_low=(-1.0, -0.5, -1.0), command_high=(1.0, 0.5, 1.0))
    assert high.obs_dims == {"policy": task.obs_dims["policy"], "privileged": task.obs_dims["privileged"]}
    seen: list[int] = []
    high.on_low_step = lambda t: seen.append(int(t.episode_step[0]))  # what a video recorder sees
    high.reset()
    action = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    _, reward, _, term, trunc, info = high.step(action)
    assert len(calls) == period and high.decisions == 1 and seen == list(range(1, period + 1))
    assert all(torch.equal(c, torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])) for c in commands)
    torch.testing.assert_close(reward, torch.stack(rewards).sum(dim=0))
    assert not (term | trunc).any()
    # second period: the episodes time out after 2.5 of its 5 steps (step 7 or 8 of the episode)
    rewards.clear()
    commands.clear()
    _, reward, _, term, trunc, info = high.step(action)
    assert len(calls) == 2 * period
    ends = task.max_episode_steps - period  # low-level steps of this period inside the old episode
    assert trunc.all() and not term.any() and info["time_outs"].all()
    torch.testing.assert_close(reward, torch.stack(rewards[:ends]).sum(dim=0))
    assert all((c == 0).all() for c in commands[ends:])  # the new episode stands until the next decision
    assert task.episode_step.tolist() == [period - ends] * 2


def task_dt() -> float:
    return 0.02


def test_high_level_needs_external_commands_and_matching_skill() -> None:
    task = make_task("go2-nav", 1, overrides=SMALL)
    with pytest.raises(ConfigError, match="command_source: external"):
        HighLevelTask(task, lambda o: o, period=5, command_low=(0, 0, 0), command_high=(1, 1, 1))
    task = _skill_task(1)
    with pytest.raises(ConfigError, match="takes 48"):
        HighLevelTask(task, lambda o: o, period=5, command_low=(0, 0, 0), command_high=(1, 1, 1), skill_dim=48)


def test_frozen_go2_flat_skill_walks_where_the_high_level_commands() -> None:
    skill, dim = load_skill(declarations_root() / "policies" / "bundles" / "go2-flat")
    task = _skill_task(2, randomization={"push_interval_s": 0}, start_yaw_noise=0.0)
    high = HighLevelTask(task, skill, period=10, command_low=(-1.0, -0.5, -1.0), command_high=(1.0, 0.5, 1.0),
                         skill_dim=dim)
    high.reset()
    start, heading = task.base_xy.clone(), task.heading.clone()
    for _ in range(10):  # 2 s at vx = 0.6 m/s
        high.step(torch.tensor([[0.6, 0.0, 0.0], [0.6, 0.0, 0.0]]))
    moved = task.base_xy - start
    forward = moved[:, 0] * heading.cos() + moved[:, 1] * heading.sin()
    assert (forward > 0.6).all() and (~task.collided).all(), forward


def test_a_high_level_trains_over_the_shipped_skill_and_evaluates(tmp_path) -> None:
    small = {"layout": {"count": 4}, "episode_length_s": 0.5}
    cfg = load_train_cfg("go2-nav-skill", overrides={
        "num_envs": 4, "steps_per_env": 4, "max_iterations": 2, "max_time_s": 0.0, "save_interval": 1,
        "hierarchy": {"period": 5}, "eval": {"num_envs": 2}, "task_overrides": small, "ppo": {"minibatches": 2}})
    runner = make_ppo_runner(cfg, tmp_path / "run")
    high = runner.task
    assert isinstance(high, HighLevelTask) and high.num_actions == 3
    summary = runner.learn(progress=False)
    assert summary["iterations"] == 2 and high.decisions == 2 * 4
    assert summary["final_mean_reward"] is not None  # 0.5-s episodes ended inside the 2 x 4 x 5 skill steps
    assert summary["eval"]["episodes"] == 2 and {"success", "time_to_goal_s", "collision"} <= summary["eval"].keys()
    report, episodes = evaluate_run(tmp_path / "run", episodes=3, num_envs=3)
    assert len(episodes) == 3
    bad = load_train_cfg("go2-nav-skill", overrides={"hierarchy": {"skill": str(tmp_path)}, "num_envs": 1,
                                                     "task_overrides": small})
    with pytest.raises(ConfigError, match="expected a run folder"):
        make_ppo_runner(bad, tmp_path / "bad")


def test_a_joint_over_its_urdf_velocity_limit_is_penalized_counted_and_ends_the_episode() -> None:
    """go2-nav trains against the deploy safety layer's joint speed check: above soft_velocity_limit x the URDF
    limit a joint is penalized (dof_vel_limits), above the limit it is a cost (joint_velocity) and ends the
    episode (terminate_on_velocity_limit)."""
    task = make_task("go2-nav", 2, seed=0)
    try:
        assert task.cfg.terminate_on_velocity_limit and task.cfg.action_bounds == "joint_range"
        calf = list(task.robot.joint_names).index("FL_calf_joint")
        assert task._velocity_limit[calf] == pytest.approx(15.7)  # the URDF's <limit velocity>
        task.step(torch.zeros(2, 12))
        assert not task.terminated().any() and (task._cost_joint_velocity() == 0).all()
        task.joint_vel[0, calf] = -15.0  # within the limit, beyond 0.9 x
        assert task._reward_dof_vel_limits()[0] == pytest.approx(15.0 - 0.9 * 15.7, abs=1e-4)
        assert not task.terminated()[0] and task._cost_joint_velocity()[0] == 0
        task.joint_vel[0, calf] = 16.0
        assert task.terminated().tolist() == [True, False] and task._cost_joint_velocity()[0] == 1
    finally:
        task.close()


def test_low_ceilings_have_a_clearance_grid_a_crouch_target_and_stop_a_standing_robot() -> None:
    """go2-nav-crouch: slabs across the arena, lower than the standing robot's top. The clearance grid holds their
    clearance under them, the scan reads it ahead, the base-height target drops under them, and a robot standing
    under one touches it (a base contact: the episode ends)."""
    layout, planner = LayoutCfg(count=16, seed=3, ceilings=1), PlannerCfg(min_clearance=0.28)
    s = generate_scenarios(layout, planner)
    with_ceiling = s.ceilings[:, 0, 0] < 50
    assert 0 < with_ceiling.sum() < 16  # 0 or 1 per layout
    cols = s.origin[0] + (np.arange(s.clearance.shape[2]) + 0.5) * s.resolution
    for i in np.flatnonzero(with_ceiling):
        x, clearance = s.ceilings[i, 0]
        assert layout.ceiling_clearance[0] <= clearance <= layout.ceiling_clearance[1]
        under = np.abs(cols - x) < layout.ceiling_length / 2
        np.testing.assert_allclose(s.clearance[i][:, under], clearance, rtol=1e-6)
        assert (s.clearance[i][:, np.abs(cols - x) > layout.ceiling_length / 2 + s.resolution] == OPEN).all()
    assert (s.clearance[~with_ceiling] == OPEN).all()
    # the ceiling draws come after a layout's other draws: the first layout is the one without ceilings
    np.testing.assert_array_equal(s.boxes[0], generate_scenarios(LayoutCfg(count=1, seed=3), planner).boxes[0])
    with pytest.raises(ConfigError, match="min_clearance"):
        make_task("go2-nav-crouch", 1, overrides={**SMALL, "planner": {"min_clearance": 0.4}})

    task = make_task("go2-nav-crouch", 2, seed=0, overrides={"layout": {"count": 32}, "noise_scale": 0.0,
                                                             "randomization": {"push_interval_s": 0}})
    # a layout with a ceiling where a robot fits 1 m before the slab's center and under it, 0.4 m from obstacles
    sc = task.scenarios

    def free_y(lib: int) -> float | None:
        grid = OccupancyGrid(sc.occupied[lib], sc.resolution, sc.origin).inflate(0.4)
        x = sc.ceilings[lib, 0, 0]
        return next((y for y in np.arange(-1.0, 1.01, 0.1)
                     if not grid.sample(np.array([x - 1.0, x]), np.full(2, y)).any()), None)

    lib, y = next((i, free_y(i)) for i in np.flatnonzero(sc.ceilings[:, 0, 0] < 50) if free_y(i) is not None)
    task.scenario[:] = int(lib)
    x, clearance = sc.ceilings[lib, 0]
    geom_pos = task._nominal_geom_pos.expand(2, -1, -1).clone()
    geom_pos[:, task._geom_ids, :2] = task._lib_geom_xy[task.scenario]
    geom_pos[:, task._ceiling_ids] = task._lib_ceiling_pos[task.scenario]
    task.sim.set_model_field("geom_pos", torch.ones(2, dtype=torch.bool), geom_pos)
    ceiling_id = task.model.geom("ceiling0").id
    np.testing.assert_allclose(task.sim.model_field("geom_pos", 0)[ceiling_id],
                               [x, 0.0, clearance + task.cfg.layout.ceiling_thickness / 2])
    # env 0 stands 1 m before the slab's center, its back to it (its scan's back row reaches 0.2 m under the slab;
    # the body and its preview ahead do not); env 1 stands under it
    qpos = task.sim.qpos.clone()
    qpos[:, 0] = torch.tensor([x - 1.0, x], dtype=torch.float64)
    qpos[:, 1] = float(y)
    qpos[:, 2] = 0.3
    qpos[:, 3:7] = torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    task.sim.set_state(torch.ones(2, dtype=torch.bool), qpos, torch.zeros_like(task.sim.qvel))
    task.update_state()
    scan = task.observation_terms()["clearance_scan"]
    back_row = task._scan_points[:, 0] < -0.75
    front = task._scan_points[:, 0] > 0.0
    torch.testing.assert_close(scan[0, back_row], torch.full_like(scan[0, back_row], float(clearance)))
    assert (scan[0, front] == task.cfg.scan.max_clearance).all()
    standing = task.cfg.base_height_target
    expected = clearance - task.body_top - task.cfg.crouch_margin
    assert task.height_target[0] == pytest.approx(standing) and task.height_target[1] == pytest.approx(expected)
    assert expected < standing - 0.05 and 0.08 < task.body_top < 0.12
    touched = False
    for _ in range(5):
        task.sensors = task.sim.step(task.default_joint_pos.double().expand(2, 4, 12).clone())
        task.update_state()
        touched |= bool(task.base_contact[1])
        assert not task.base_contact[0] and bool(task.terminated()[1]) == bool(task.base_contact[1])
    assert touched


def test_init_starts_a_run_from_another_tasks_weights_matching_columns_by_name(tmp_path) -> None:
    """`train go2-nav-crouch --init <go2-nav run>`: the new clearance-scan columns get zero weights, so the
    warm-started actor and critic compute what the trained ones do; other network shapes are refused."""
    small = {"layout": {"count": 4}, "episode_length_s": 0.5}
    common = {"num_envs": 4, "steps_per_env": 4, "max_iterations": 1, "max_time_s": 0.0, "save_interval": 1,
              "eval": {"num_envs": 1}, "task_overrides": small, "ppo": {"minibatches": 2},
              "network": {"actor_hidden": [32], "critic_hidden": [32]}}
    old = make_ppo_runner(load_train_cfg("go2-nav", overrides=common), tmp_path / "nav")
    old.learn(progress=False)
    crouch_small = {"task_overrides": {**small, "layout": {"count": 4, "ceilings": 1}}}
    new = make_ppo_runner(load_train_cfg("go2-nav-crouch", overrides={**common, **crouch_small}), tmp_path / "crouch")
    report = warm_start(new.algorithm, new.task, tmp_path / "nav", count_cap=8)
    assert report["policy"] == (111, 63, 0) and report["privileged"] == (125, 63, 0)
    obs = new.task.observations()
    columns = new.task.observation_columns("policy")
    shared = [i for i, c in enumerate(columns) if not c.startswith("clearance_scan")]
    a, b = old.algorithm.policy, new.algorithm.policy
    torch.testing.assert_close(b.act_mean(obs["policy"]), a.act_mean(obs["policy"][:, shared]))
    critic_shared = [i for i, c in enumerate(new.task.observation_columns("privileged"))
                     if "clearance_scan" not in c]
    torch.testing.assert_close(b.value(obs["privileged"]), a.value(obs["privileged"][:, critic_shared]))
    assert int(a.actor_norm.count) == 16 and int(b.actor_norm.count) == 8  # capped: new columns adapt fast
    other = make_ppo_runner(load_train_cfg("go2-nav-crouch", overrides={
        **common, **crouch_small, "network": {"actor_hidden": [16], "critic_hidden": [32]}}), tmp_path / "other")
    with pytest.raises(CheckpointError, match=r"actor\.0\.weight: shape \(32, 111\) .* \(16, 174\).*same network"):
        warm_start(other.algorithm, other.task, tmp_path / "nav", count_cap=100)
    for runner in (old, new, other):
        runner.close()
