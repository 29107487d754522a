"""The go2-nav waypoint follower on the robot side: the bundle's navigation section, the follower's observation terms
rebuilt from a path, a pose and a map exactly as the training task computes them, the bundle's own planner for
goals, and the shipped bundle on the Go2 twin following a nav_msgs/Path (and reading a nav_msgs/OccupancyGrid) that
separate processes publish over DDS; a malformed or stale path, or a stale pose, damps the robot.

Real components only: MuJoCo (task and twin), onnxruntime (the shipped bundle), cyclonedds between processes on
loopback (a random domain per test)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dds_domain import new_domain

from robolearn.config import from_dict, merge, to_dict
from robolearn.deploy.bundle import load_bundle, read_manifest, write_manifest
from robolearn.deploy.navigation import GoalPlanner, NavigationSources, PathFollower
from robolearn.deploy.profile import HardwareProfile, load_profile
from robolearn.deploy.runtime import DeployRuntime, Mode
from robolearn.errors import BundleError
from robolearn.planning import OccupancyGrid
from robolearn.sim.tasks import make_task

HELD_OUT = 1000  # the layout seed go2-nav evaluates on


@pytest.fixture(scope="module")
def bundle():
    return load_bundle("go2-nav")


@pytest.fixture
def domain() -> int:
    return new_domain()


def _profile(**changes) -> HardwareProfile:
    data = merge(to_dict(load_profile("go2")), {"stand": {"duration_s": 0.1}, "sim": {"start": "standing"},
                                                 "dds": {"network_interface": "lo"}, **changes})
    return from_dict(HardwareProfile, data, where="test profile")


def test_bundle_states_its_subgoal_interface_and_requires_it(bundle, tmp_path: Path) -> None:
    """The shipped bundle's navigation section is the task's (what a robot needs to rebuild waypoints, goal and
    scan), survives a write/read round trip, and a bundle whose policy observes waypoints without it is refused."""
    task = make_task("go2-nav", 1, seed=0, overrides={"layout": {"count": 1}})  # the contract is not the layouts'
    try:
        assert to_dict(bundle.manifest.navigation) == to_dict(type(bundle.manifest.navigation)(
            **task.navigation_contract()))
    finally:
        task.close()
    names = [t.name for t in bundle.manifest.observation]
    assert {"waypoints", "goal_pos", "occupancy_scan"} <= set(names)
    folder = tmp_path / "copy"
    folder.mkdir()
    write_manifest(bundle.manifest, folder)
    assert to_dict(read_manifest(folder)) == to_dict(bundle.manifest)
    data = to_dict(bundle.manifest)
    data["navigation"] = None
    (folder / "deploy.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(BundleError, match="navigation section"):
        read_manifest(folder)


def test_follower_terms_equal_the_training_terms_along_a_rollout(bundle) -> None:
    """The shipped policy walks go2-nav held-out layouts in the task; at every step the robot-side follower, fed only
    the path, the base pose (x, y, yaw) and the layout's occupancy grid, computes the same waypoints, goal and scan
    as the task's observation terms."""
    task = make_task("go2-nav", 4, seed=2, overrides={"layout": {"seed": HELD_OUT, "count": 16}, "noise_scale": 0.0})
    try:
        obs = task.reset()
        n = task.num_envs
        followers = []
        for i in range(n):
            f = PathFollower(bundle.manifest.navigation)
            f.set_path(task.path[i, :task.path_length[i]].numpy(), 0.0, spaced=True)
            followers.append(f)
        s = task.scenarios
        grids = [OccupancyGrid(s.occupied[int(k)], s.resolution, s.origin) for k in task.scenario]
        moved, scan_match, scan_total = 0.0, 0, 0
        start = task.base_xy.clone()
        for step in range(150):
            for i, f in enumerate(followers):
                f.update(task.base_xy[i].double().numpy(), float(task.heading[i]))
                if step == 0:  # the base exactly on path[0]: a point exactly lookahead_m away is a float32/64 tie
                    continue
                np.testing.assert_allclose(f.waypoints(), task._obs_waypoints()[i].numpy(), atol=1e-4,
                                           err_msg=f"env {i} step {step}")
                np.testing.assert_allclose(f.goal_pos(), task._obs_goal_pos()[i].numpy(), atol=1e-4)
                scan = f.scan(grids[i])
                scan_match += int((scan == task.occupancy_scan()[i].numpy()).sum())
                scan_total += scan.size
            actions = torch.from_numpy(bundle.policy.batch(obs["policy"].numpy()))
            obs, _, _, terminated, truncated, _ = task.step(actions)
            assert not (terminated | truncated).any(), "the policy fell or timed out in 3 s"
        moved = float((task.base_xy - start).norm(dim=1).min())
        assert moved > 1.0  # every robot walked along its path, so the tracked point advanced
        assert max(f.tracked for f in followers) > 3
        # float32 (task) vs float64 (robot) at cell borders: a point exactly on a border may fall either side
        assert scan_match / scan_total > 0.995, scan_match / scan_total
    finally:
        task.close()


def test_a_new_path_starts_at_the_base_and_a_republished_one_keeps_progress(bundle) -> None:
    f = PathFollower(bundle.manifest.navigation)
    path = np.array([[0.0, 0.0], [3.0, 0.0]])
    f.set_path(path, 1.0)
    for x in np.arange(0.0, 2.05, 0.1):
        f.update(np.array([x, 0.0]), 0.0)
    assert f.progress == 7  # 2.1 m / 0.3 m
    f.set_path(path, 2.0)  # the same path again (a stack republishing its plan): progress stays, the stamp is new
    assert f.progress == 7 and f.stamp == 2.0
    f.set_path(np.array([[2.0, 0.5], [2.0, 3.0]]), 3.0)  # replanned from elsewhere: progress from the nearest point
    f.update(np.array([2.0, 1.0]), 0.0)
    assert f.progress in (1, 2)
    np.testing.assert_allclose(f.goal_pos(), [0.0, 2.0], atol=1e-9)
    with pytest.raises(ValueError, match="finite"):
        f.set_path(np.array([[0.0, np.nan]]), 4.0)


def test_goal_planner_plans_on_the_map_and_names_an_unreachable_goal(bundle) -> None:
    """The bundle's own high level: A* on the map (inflated as in training) from the base to the goal; from inside
    an obstacle's inflated margin it starts at the nearest free place; an unreachable goal is a one-line error."""
    occupied = np.zeros((30, 60), dtype=bool)
    occupied[:, 30] = True
    occupied[12:17, 30] = False  # a 0.5 m passage in a wall at x = 3 m
    grid = OccupancyGrid(occupied, 0.1, (0.0, -1.5))
    goal = {"xy": np.array([5.0, 1.0])}
    pose = {"xy": np.array([0.5, -1.0, 0.0])}
    planner = GoalPlanner(bundle.manifest.navigation, lambda: (goal["xy"], 0.0), lambda: grid,
                          lambda: (pose["xy"], 0.0))
    assert planner.path() is None  # nothing planned yet
    planner.step()
    path, _ = planner.path()
    assert planner.plans == 1 and np.allclose(path[0], [0.5, -1.0]) and np.allclose(path[-1], [5.0, 1.0])
    dense = np.concatenate([np.linspace(a, b, 50) for a, b in zip(path[:-1], path[1:], strict=True)])
    at_wall = dense[np.abs(dense[:, 0] - 3.05) < 0.05]
    assert np.all(np.abs(at_wall[:, 1] - (-0.05)) < 0.1), at_wall  # through the passage's middle
    planner.step()
    assert planner.plans == 1 and planner.path()[0] is path  # within 1 / replan_hz and the same goal: no replan
    pose["xy"] = np.array([2.9, -0.62, 0.0])  # beside the wall, inside its 0.25 m inflation
    goal["xy"] = np.array([5.0, -1.0])
    planner.step()
    path, _ = planner.path()
    assert np.allclose(path[0], [2.9, -0.62]) and np.allclose(path[-1], [5.0, -1.0])
    assert np.linalg.norm(path[1] - path[0]) < 0.3  # the nearest free place, then around through the passage
    goal["xy"] = np.array([3.0, 1.2])  # on the wall
    planner.step()
    with pytest.raises(ValueError, match=r"no plan to goal \[3.0, 1.2\].*goal"):
        planner.path()
    assert planner.path()[0] is path and "no plan" in planner.last_error  # raised once; the last plan stays
    goal["xy"] = np.array([5.0, 1.0])  # in a thread, as the runtime uses it: plans arrive without step()
    planner.start()
    t0 = time.monotonic()
    while planner.plans < 3 and time.monotonic() - t0 < 5.0:
        time.sleep(0.01)
    planner.close()
    assert planner.plans == 3 and np.allclose(planner.path()[0][-1], [5.0, 1.0])


def _running(bundle, sources: NavigationSources, profile: HardwareProfile | None = None, *, scenario: int = 0):
    from robolearn.twin.navigation import NavTwin

    profile = profile or _profile()
    twin = NavTwin(bundle.manifest.task, 1.0 / profile.control_hz, scenario=scenario, layout_seed=HELD_OUT,
                   joint_names=profile.joint_names)
    if sources.pose is None:
        sources.pose = twin.base_pose
    if sources.grid is None:
        sources.grid = twin.occupancy
    rt = DeployRuntime(bundle, profile, twin, navigation=sources)
    rt.spin(0.02)
    assert rt.stand() == "stand"
    rt.spin(0.15)
    assert rt.run() == "run"
    return rt, twin


def test_runtime_needs_the_follower_sources(bundle) -> None:
    from robolearn.twin.sim_robot import SimRobot

    profile = _profile()
    robot = SimRobot("go2", 1.0 / profile.control_hz, joint_names=profile.joint_names)
    with pytest.raises(BundleError, match="base pose source, a path source and an occupancy grid"):
        DeployRuntime(bundle, profile, robot)
    with pytest.raises(BundleError, match="occupancy grid"):
        DeployRuntime(bundle, profile, robot, navigation=NavigationSources(pose=lambda: None, path=lambda: None))


def test_no_path_holds_in_place_and_a_stale_pose_damps(bundle) -> None:
    """Before any path the follower stands where Run found it (its goal is under it); odometry that stops
    updating damps the robot, naming it."""
    frozen: dict[str, tuple | None] = {"pose": None}

    def pose():
        return frozen["pose"] or twin.base_pose()

    rt, twin = _running(bundle, NavigationSources(pose=pose, path=lambda: None, grid=None))
    start = twin.base_pose()[0]
    rt.spin(2.0)
    assert rt.mode == Mode.RUN, rt.trips
    assert np.linalg.norm(twin.base_pose()[0][:2] - start[:2]) < 0.25 and len(rt.follower.path) == 1
    frozen["pose"] = twin.base_pose()
    rt.spin(0.5)
    assert rt.mode == Mode.DAMP and "base pose is stale" in rt.trips[-1].reason
    rt.close()


PATH_PEER = """
    import select, sys, time
    from robolearn.ros.dds import make_writer, participant
    from robolearn.ros.navigation import path_message
    from robolearn.ros.dds_types import Path_
    from robolearn.twin.navigation import load_scenario

    path = load_scenario("go2-nav", 0, 1000).path
    w = make_writer(participant(int(sys.argv[1]), "lo"), "rt/plan", Path_)
    print("ready", flush=True)
    go = None
    while go is None or time.monotonic() - go < 1.2:  # the path at 5 Hz, until 1.2 s after "go" (stdin)
        w.write(path_message(path, "odom"))
        if go is None and select.select([sys.stdin], [], [], 0.2)[0]:
            sys.stdin.readline()
            go = time.monotonic()
        elif go is not None:
            time.sleep(0.2)
    bad = path.copy()
    bad[3, 1] = float("nan")
    for _ in range(20):
        w.write(path_message(bad, "odom"))
        time.sleep(0.05)
    time.sleep(30)
"""


def test_a_malformed_path_from_another_process_damps_the_walking_robot(bundle, domain: int) -> None:
    """A planner process publishes the path over DDS, then one with a NaN waypoint: the robot, walking along the
    first, damps at once, naming the topic and the waypoint."""
    from robolearn.ros.dds import DdsPathSource

    source = DdsPathSource("/plan", frame_id="odom", domain_id=domain, network_interface="lo")
    peer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PATH_PEER), str(domain)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline().strip() == "ready", peer.communicate()[1][-2000:]
        t0 = time.monotonic()
        while source.read() is None and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        assert source.read() is not None
        rt, twin = _running(bundle, NavigationSources(pose=None, path=source.poll, grid=None))
        x0 = twin.base_pose()[0][0]
        peer.stdin.write("go\n")
        peer.stdin.flush()
        rt.spin(1.0)
        assert rt.mode == Mode.RUN and len(rt.follower.path) > 10, rt.trips  # following the path
        rt.spin(1.5)
        assert rt.mode == Mode.DAMP, "the robot kept walking"
        reason = rt.trips[-1].reason
        assert "path rejected: rt/plan" in reason and "pose 3 of" in reason and "not finite" in reason, reason
        assert twin.base_pose()[0][0] - x0 > 0.3 and not rt.follower.reached  # it was walking, short of the goal
        rt.close()
    finally:
        peer.kill()
        source.close()


def test_a_path_that_stops_updating_damps_before_the_goal_but_not_after_it(bundle) -> None:
    """The followed path older than safety.path_timeout_ms while the goal is not reached: damp, naming it. A robot
    standing at its goal may keep a path that no longer updates (a stack stops publishing once it arrived)."""
    from robolearn.twin.navigation import load_scenario

    path = load_scenario("go2-nav", 0, HELD_OUT).path
    first: dict[str, float] = {}  # the path's stamp: when Run first asked for it, never refreshed

    def once(waypoints):
        return lambda: (waypoints(), first.setdefault("t", time.monotonic()))

    profile = _profile(safety={"path_timeout_ms": 1000.0})
    rt, twin = _running(bundle, NavigationSources(pose=None, path=once(lambda: path), grid=None), profile)
    x0 = twin.base_pose()[0][0]
    rt.spin(1.6)
    assert rt.mode == Mode.DAMP and "path is stale" in rt.trips[-1].reason, rt.trips
    assert twin.base_pose()[0][0] - x0 > 0.2 and len(rt.follower.path) > 10
    rt.close()
    first.clear()
    short = np.array([[0.0, 0.0], [0.01, 0.0]])  # a goal under the robot: reached at once
    rt, twin = _running(bundle, NavigationSources(pose=None, path=once(lambda: short + twin.start), grid=None),
                        profile)
    rt.spin(1.6)
    assert rt.mode == Mode.RUN and rt.follower.reached and len(rt.follower.path) == 2, rt.trips
    rt.close()


def test_the_bundle_drives_the_twin_through_the_passage_on_a_path_from_another_process(tmp_path: Path,
                                                                                         domain: int) -> None:
    """Acceptance, as a user runs it: `robolearn plan` publishes a held-out layout's path (nav_msgs/Path) and map
    (nav_msgs/OccupancyGrid) over DDS; `robolearn deploy` runs the shipped go2-nav bundle on the Go2 twin in that
    layout, reading the path and the map (its scan) from DDS: stand, run, and the robot reaches the goal, which lies
    beyond the wall: through its passage."""
    planner = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "plan", "--layout-seed", str(HELD_OUT),
                                "--seed", "0", "--domain", str(domain), "--rate", "2", "--duration", "40",
                                "--map-topic", "/map"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report = tmp_path / "report.json"
    try:
        done = subprocess.run([sys.executable, "-m", "robolearn.cli", "deploy", "--robot", "go2", "--policy", "go2-nav",
                               "--auto", "--duration", "10", "--layout-seed", str(HELD_OUT), "--seed", "0",
                               "--set", "stand.duration_s=0.5",
                               "--path-topic", "/plan", "--set", f"dds.domain_id={domain}", "--set",
                               "dds.map_topic=/map", "--report", str(report)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        planner.kill()
        out = planner.communicate()[0]
    assert "scenario 0" in out
    result = json.loads(report.read_text())
    nav = result["navigation"]
    assert result["trips"] == [] and nav["goal_reached"], nav
    assert nav["path_points"] > 10  # the published path, not the hold point
    assert nav["twin_goal_distance_m"] < 0.45  # goal_radius 0.4 m, then it stands there
    assert result["timing"]["policy_p99_ms"] < 10.0


def test_map_source_reads_occupancy_grids_and_rejects_malformed_ones(domain: int) -> None:
    """nav_msgs/OccupancyGrid over DDS: the layout's grid arrives cell for cell (occupied >= 50 %, unknown counts as
    occupied); data that does not fill width x height, a rotated origin or another frame are rejected, naming why."""
    from robolearn.ros.dds import DdsGridSource, make_writer, participant
    from robolearn.ros.dds_types import OccupancyGrid_, Quaternion_
    from robolearn.ros.navigation import grid_message
    from robolearn.twin.navigation import load_scenario

    grid = load_scenario("go2-nav", 3, HELD_OUT).grid
    source = DdsGridSource("/map", frame_id="odom", domain_id=domain, network_interface="lo")
    writer = make_writer(participant(domain, "lo"), "rt/map", OccupancyGrid_)
    try:
        good = grid_message(grid, "odom")
        good.data[0] = -1  # unknown
        short = grid_message(grid, "odom")
        short.data = short.data[:-1]
        rotated = grid_message(grid, "odom")
        rotated.info.origin.orientation = Quaternion_(x=0.0, y=0.0, z=0.38, w=0.92)
        t0 = time.monotonic()
        while (source.read() is None or source.rejected < 3) and time.monotonic() - t0 < 10:
            for m in (good, short, rotated, grid_message(grid, "map")):
                writer.write(m)
            time.sleep(0.05)
        received, _ = source.read()
        expected = grid.occupied.copy()
        expected[0, 0] = True
        assert received.shape == grid.shape and np.array_equal(received.occupied, expected)
        assert received.resolution == pytest.approx(grid.resolution) and received.origin == pytest.approx(grid.origin)
        assert source.rejected >= 3
        with pytest.raises(ValueError, match="rt/map: OccupancyGrid_"):
            source.poll()
    finally:
        source.close()


def test_a_two_level_bundle_round_trips_and_its_high_level_acts_every_k_steps_in_the_runtime(tmp_path: Path) -> None:
    """A high level trained over the shipped go2-flat bundle exports to one bundle with both levels: the high level
    (its own observation terms, the map of its output onto the skill's command ranges, 50 Hz / period) over the
    skill's graph unchanged. On the Go2 twin the runtime runs the high level exactly every period policy steps,
    from the first, and hands its mapped command to the low level."""
    from robolearn.export import export_run
    from robolearn.learn.config import load_train_cfg
    from robolearn.learn.train import make_ppo_runner
    from robolearn.twin.navigation import NavTwin

    cfg = load_train_cfg("go2-nav-skill", overrides={
        "num_envs": 4, "steps_per_env": 4, "max_iterations": 2, "max_time_s": 0.0, "save_interval": 1,
        "hierarchy": {"period": 5}, "eval": {"num_envs": 2}, "task_overrides": {"layout": {"count": 4}},
        "ppo": {"minibatches": 2}})
    runner = make_ppo_runner(cfg, tmp_path / "run")
    runner.learn(progress=False)
    runner.close()
    report = export_run(tmp_path / "run", tmp_path / "bundle", record_envs=2, record_steps=3)
    assert report.parity_max_error <= 1e-5
    bundle = load_bundle(tmp_path / "bundle")
    m, skill = bundle.manifest, load_bundle("go2-flat")
    high, low = m.graph("high_level"), m.policy
    assert low.role == "low_level" and high.rate_hz == pytest.approx(skill.manifest.policy_hz / 5)
    assert [t.name for t in m.observation] == [t.name for t in skill.manifest.observation]
    assert [t.name for t in high.observation] == ["goal_pos", "occupancy_scan", "base_ang_vel", "projected_gravity",
                                                  "velocity_command"]
    assert high.command.low == [-1.0, -0.5, -1.0] and m.navigation is not None
    assert (tmp_path / "bundle" / "low_level.onnx").read_bytes() == \
        (Path(skill.folder) / skill.manifest.policy.file).read_bytes()
    assert to_dict(read_manifest(tmp_path / "bundle")) == to_dict(m)

    profile = _profile()
    twin = NavTwin("go2-nav-skill", 1.0 / profile.control_hz, scenario=0, layout_seed=HELD_OUT,
                   joint_names=profile.joint_names)
    rt = DeployRuntime(bundle, profile, twin, navigation=NavigationSources(
        pose=twin.base_pose, path=lambda: (twin.path, time.monotonic()), grid=twin.occupancy))
    graph, calls = rt._high_graph, []

    def recorded(obs):
        out = graph(obs)
        calls.append((rt._run_ticks, out.copy()))
        return out

    rt._high_graph = recorded
    rt.spin(0.02)
    assert rt.stand() == "stand"
    rt.spin(0.15)
    assert rt.run() == "run"
    rt.spin(1.2)
    assert rt.mode == Mode.RUN, rt.trips
    ticks = [t for t, _ in calls]
    assert ticks[0] == 0 and len(ticks) >= 5 and set(np.diff(ticks)) == {rt.policy_every * rt.high_every}
    a = np.clip(calls[-1][1], -1.0, 1.0)
    np.testing.assert_allclose(rt.command, np.array(high.command.low) + (a + 1) / 2 * (
        np.array(high.command.high) - np.array(high.command.low)), atol=1e-6)
    assert rt.decisions == len(calls) and "high_level_p99_ms" in rt.stats.summary()
    rt.close()


def test_the_ros2_node_checks_messages_as_the_dds_sources_do() -> None:
    """The rclpy node's subscriptions keep the latest message through `LatestMessage` with the DDS sources'
    converters (rclpy messages have the same fields; here the DDS types stand in, as rclpy is not installable):
    a malformed path is rejected, and `poll` raises once for it, naming the topic."""
    from robolearn.ros.dds import path_waypoints
    from robolearn.ros.navigation import LatestMessage, path_message

    latest = LatestMessage("/plan", lambda m: path_waypoints(m, "map"))
    assert latest.read() is None and latest.poll() is None
    latest.on_message(path_message(np.array([[0.0, 0.0], [1.0, 0.5]]), "map"))
    waypoints, stamp = latest.poll()
    np.testing.assert_array_equal(waypoints, [[0.0, 0.0], [1.0, 0.5]])
    latest.on_message(path_message(np.array([[0.0, 0.0]]), "odom"))  # another frame
    with pytest.raises(ValueError, match=r"/plan: .*frame 'odom', expected 'map'"):
        latest.poll()
    assert latest.poll()[1] == stamp and latest.rejected == 1  # the good path stays; one raise per rejection


def test_clearance_scan_on_the_robot_equals_the_training_term_and_crosses_dds(domain: int) -> None:
    """go2-nav-crouch: the robot-side clearance scan (PathFollower, from a ClearanceGrid and the base pose) equals
    the task's clearance_scan at the same poses; the grid crosses DDS as nav_msgs/OccupancyGrid in cm (nothing
    overhead: 127), and a cell below -1 is rejected."""
    from robolearn.deploy.bundle import NavigationSpec
    from robolearn.planning import ClearanceGrid
    from robolearn.ros.dds import DdsClearanceSource, make_writer, participant
    from robolearn.ros.dds_types import OccupancyGrid_
    from robolearn.ros.navigation import grid_message
    from robolearn.sim.tasks.navigation import OPEN

    task = make_task("go2-nav-crouch", 4, seed=1, overrides={"layout": {"seed": HELD_OUT, "count": 16},
                                                             "noise_scale": 0.0})
    try:
        spec = NavigationSpec(**task.navigation_contract())
        assert spec.clearance_max_m == task.cfg.scan.max_clearance
        s = task.scenarios
        with_ceiling = np.flatnonzero(s.ceilings[:, 0, 0] < 50)[:4]
        task.scenario[:] = torch.as_tensor(with_ceiling)
        grids = [ClearanceGrid(np.where(s.clearance[k] >= OPEN, np.inf, s.clearance[k]), s.resolution, s.origin)
                 for k in with_ceiling]
        seen_ceiling = 0
        for offset in np.arange(-1.2, 1.21, 0.3):  # along x through each layout's ceiling, turning as it goes
            qpos = task.sim.qpos.clone()
            qpos[:, 0] = torch.as_tensor(s.ceilings[with_ceiling, 0, 0] + offset)
            qpos[:, 1] = torch.linspace(-0.6, 0.6, 4, dtype=torch.float64)
            yaw = torch.full((4,), float(offset), dtype=torch.float64)
            qpos[:, 3], qpos[:, 6] = torch.cos(yaw / 2), torch.sin(yaw / 2)
            task.sim.set_state(torch.ones(4, dtype=torch.bool), qpos, torch.zeros_like(task.sim.qvel))
            task.update_state()
            expected = task.clearance_scan().numpy()
            for i, grid in enumerate(grids):
                f = PathFollower(spec)
                f.update(task.base_xy[i].double().numpy(), float(task.heading[i]))
                got = f.clearance_scan(grid)
                # float32 (task) vs float64 (robot) at cell borders: compare away from the slab's edges
                assert (np.abs(got - expected[i]) < 1e-5).mean() > 0.97, (offset, i)
                seen_ceiling += int((got < spec.clearance_max_m).any())
        assert seen_ceiling >= 12
    finally:
        task.close()

    grid = grids[0]
    source = DdsClearanceSource("/clearance", frame_id="odom", domain_id=domain, network_interface="lo")
    writer = make_writer(participant(domain, "lo"), "rt/clearance", OccupancyGrid_)
    try:
        good = grid_message(grid, "odom")
        bad = grid_message(grid, "odom")
        bad.data[5] = -5
        t0 = time.monotonic()
        while (source.read() is None or source.rejected < 1) and time.monotonic() - t0 < 10:
            for m in (good, bad):
                writer.write(m)
            time.sleep(0.05)
        received, _ = source.read()
        assert received.shape == grid.shape and received.origin == pytest.approx(grid.origin)
        finite = np.isfinite(grid.clearance)
        assert finite.any() and np.array_equal(np.isfinite(received.clearance), finite)
        np.testing.assert_allclose(received.clearance[finite], grid.clearance[finite], atol=0.005)
        with pytest.raises(ValueError, match="clearance cells must be 0..127 cm or -1"):
            source.poll()
    finally:
        source.close()


def test_the_crouch_bundle_reads_the_clearance_grid_crouches_under_the_ceiling_and_damps_without_it() -> None:
    """The shipped go2-nav-crouch bundle needs a clearance source; with one, on the twin, the robot walks under
    held-out scenario 23's ceiling (1.2 m after the start, 0.34 m high: 3 cm below the standing body's top)
    crouched, without touching it; a clearance source that stops giving a grid damps the robot, naming it."""
    from robolearn.twin.sim_robot import SimRobot

    crouch = load_bundle("go2-nav-crouch")
    profile = _profile()
    robot = SimRobot("go2", 1.0 / profile.control_hz, joint_names=profile.joint_names)
    with pytest.raises(BundleError, match="an occupancy grid .its scan. and a clearance grid .its clearance scan."):
        DeployRuntime(crouch, profile, robot, navigation=NavigationSources(pose=lambda: None, path=lambda: None,
                                                                           grid=lambda: None))
    robot.close()
    grid: dict[str, object] = {"on": True}

    def clearance():
        return twin.clearance() if grid["on"] else None

    def path():
        return twin.path, time.monotonic()  # a stack republishing its plan

    rt, twin = _running(crouch, NavigationSources(pose=None, path=path, clearance=clearance), scenario=23)
    (x, height), = twin.ceilings
    assert height < 0.35 and x < 2.0
    ceiling = twin.model.geom("ceiling0").id
    lowest, touched = 1.0, False
    t0 = time.monotonic()
    while twin.base_pose()[0][0] < x + 0.7 and time.monotonic() - t0 < 8.0 and rt.mode == Mode.RUN:
        rt.spin(0.05)
        if abs(twin.data.qpos[0] - x) < 0.3:
            lowest = min(lowest, float(twin.data.qpos[2]))
        touched |= bool((twin.data.contact.geom[:twin.data.ncon] == ceiling).any())
    assert rt.mode == Mode.RUN and not rt.trips, rt.trips
    assert twin.base_pose()[0][0] >= x + 0.7, "did not pass under the ceiling in 8 s"
    assert not touched and lowest < 0.24, lowest  # it stands at 0.27 (its top at 0.37 m)
    grid["on"] = False
    rt.spin(0.1)
    assert rt.mode == Mode.DAMP and "no clearance grid received" in rt.trips[-1].reason
    rt.close()
    twin.close()
