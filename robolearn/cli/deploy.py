"""`robolearn deploy`: a policy bundle on a robot (or its twin) through the deploy runtime and safety layer.

Everything the user gives (duration, command, interface, IMU topic) is checked before the robot is built, so
bad input never moves anything. Exit codes (`EXIT_*`): 0 a session without a fault, 2 bad input, 3 a session that
ended in a fault, 4 no robot state. Log lines and warnings go to stderr through the same rich console as the
live status line, so each starts on a line of its own; the report (JSON) goes to stdout.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from robolearn.cli.app import app, console, parse_sets
from robolearn.errors import ConfigError

__all__ = ["deploy", "plan", "EXIT_OK", "EXIT_BAD_INPUT", "EXIT_FAULT", "EXIT_NO_ROBOT"]

EXIT_OK = 0  # the session ended without a fault
EXIT_BAD_INPUT = 2  # bad flag, profile or bundle (robolearn.cli.app.main): nothing moved
EXIT_FAULT = 3  # the session ended in a fault: a safety trip, or in --auto a request the runtime refused
EXIT_NO_ROBOT = 4  # no robot state within safety.first_state_timeout_s


class _ConsoleLogHandler(logging.Handler):
    """Log records printed through a rich console: while a live status line is shown, rich clears it, prints
    the record on a line of its own and redraws the status below (a plain stream would write onto it)."""

    def __init__(self, out: Console) -> None:
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.out.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise into the control loop
            self.handleError(record)


@app.command(epilog="Exit codes: 0 the session ended without a fault | 2 bad input, nothing moved | 3 the session "
                    "ended in a fault (a safety trip, or in --auto a stand/run the runtime refused; the report's "
                    "timeline says when and why) | 4 no robot state within safety.first_state_timeout_s "
                    "(default 3 s)")
def deploy(
    robot: Annotated[str, typer.Option(help="hardware profile name (hardware/<robot>.yaml) or YAML path")],
    policy: Annotated[Path, typer.Option(help="policy bundle folder (robolearn export) or shipped bundle name")],
    transport: Annotated[str, typer.Option(help="sim | dds | ros2")] = "sim",
    duration: Annotated[float, typer.Option(help="seconds to run, >= 0 (0: until Ctrl-C)")] = 0.0,
    auto: Annotated[bool, typer.Option(help="stand, run and stop on a timer instead of keys")] = False,
    cmd: Annotated[Optional[str], typer.Option(
        help="command while running: 'vx,vy,wz' (or an arm's target x,y,z), clipped into the ranges the policy "
             "was trained on")] = None,
    interface: Annotated[Optional[str], typer.Option(
        help="--transport dds: the network interface to the robot (e.g. eth0; lo for a local twin); default: the "
             "profile's dds.network_interface (--transport sim with --path-topic/--goal-topic: lo)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a profile field: key.sub=value")] = [],  # noqa: B006
    camera: Annotated[list[str], typer.Option(
        help="an image policy's camera: NAME=opencv:<index | /dev/videoN | video file> (repeat per camera)")
    ] = [],  # noqa: B006
    seed: Annotated[int, typer.Option(
        help="--transport sim with a policy that observes an object (panda-push): the task episode whose block "
             "and goal the twin starts with; with a path follower (go2-nav): the layout scenario")] = 0,
    layout_seed: Annotated[Optional[int], typer.Option(
        help="--transport sim with a path follower (go2-nav): the layout library the twin's scene is drawn from "
             "(default: the task's training layouts; --seed picks the scenario in it)")] = None,
    path_topic: Annotated[Optional[str], typer.Option(
        help="a path follower: follow nav_msgs/Path from this DDS/ROS topic (e.g. Nav2's /plan; default on a robot: "
             "the profile's dds.path_topic)")] = None,
    goal_topic: Annotated[Optional[str], typer.Option(
        help="a path follower: plan to geometry_msgs/PoseStamped goals from this topic on the map (the bundle's own "
             "planner) instead of following a path")] = None,
    report: Annotated[Optional[Path], typer.Option(
        help="write the session report (timeline of mode changes and trips, timing, Damp) as JSON")] = None,
) -> None:
    """Run a policy bundle on a robot through the deploy runtime (Passive -> Stand -> Run -> Damp).

    On a terminal, single keys drive it (listed at start); `--auto` stands, runs and stops on a timer.
    Ctrl-C damps and exits. Every flag is checked before anything moves."""
    import contextlib
    import json
    import threading

    from rich.live import Live

    from robolearn.config import from_dict, merge, to_dict
    from robolearn.deploy.bundle import load_bundle
    from robolearn.deploy.keys import KeyControl
    from robolearn.deploy.profile import HardwareProfile, load_profile
    from robolearn.deploy.runtime import DeployRuntime
    from robolearn.deploy.session import (
        NoRobotState,
        check_imu,
        check_network_interface,
        clip_command,
        make_robot,
        parse_command,
        run_session,
        session_report,
    )
    from robolearn.deploy.transports import transport_names

    err = Console(stderr=True)
    if not (math.isfinite(duration) and duration >= 0):
        raise ConfigError(f"--duration: expected seconds >= 0 (0: until Ctrl-C), got {duration:g}")
    if transport not in transport_names():
        raise ConfigError(f"--transport: unknown transport {transport!r}; valid transports: "
                          f"{', '.join(transport_names())}")
    if interface is not None and transport != "dds" and not (path_topic or goal_topic):
        raise ConfigError(f"--interface: only used with --transport dds or a --path-topic/--goal-topic (this is "
                          f"--transport {transport})")
    if report is not None:
        from robolearn.cli.export import output_folder

        with output_folder(report.parent, "--report folder"):  # written after the session: checked before it
            pass
    prof = load_profile(robot)
    if set_:
        prof = from_dict(HardwareProfile, merge(to_dict(prof), parse_sets(set_)), where=f"{prof.source} (--set)")
    if transport == "ros2":  # the rclpy node owns the loop; same profile, bundle and runtime
        from robolearn.ros.node import run_node

        check_imu(prof, None, transport)
        run_node(["--ros-args", "-p", f"robot:={robot}", "-p", f"policy:={policy}"])
        return
    bundle = load_bundle(policy)
    manifest = bundle.manifest
    command = None
    if cmd is not None:
        command, outside = clip_command(parse_command(cmd, manifest), manifest)
        if outside:
            used = ",".join(f"{x:g}" for x in command)
            err.print(f"[yellow]warning:[/] --cmd {escape(cmd)}: {outside} (the ranges the policy was trained on); "
                      f"using {used}", highlight=False, soft_wrap=True)
        command = command.tolist()
    if transport == "dds":
        if interface is not None:
            check_network_interface(interface, "--interface")
            prof.dds.network_interface = interface
        elif prof.dds.network_interface:
            check_network_interface(prof.dds.network_interface, f"{prof.source}: dds.network_interface")
    check_imu(prof, manifest, transport)

    handler = _ConsoleLogHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("robolearn").setLevel(logging.INFO)
    objects, object_source = None, None
    observes_object = any(t.name == "object_pose" for t in manifest.observation)
    sees = manifest.camera_names
    follows = manifest.navigation is not None
    if not follows and (path_topic or goal_topic or layout_seed is not None):
        raise ConfigError(f"{policy}: --path-topic, --goal-topic and --layout-seed are for path followers (a bundle "
                          f"with a navigation section, e.g. go2-nav)")
    if transport == "sim" and (path_topic or goal_topic):  # the twin's DDS peers: on this machine unless told
        check_network_interface(interface or "lo", "--interface")
        prof.dds.network_interface = interface or "lo"
    nav_link = None
    if follows and transport == "sim":  # the twin in a navigation layout: its odometry, its map, its goal
        from robolearn.ros.navigation import navigation_link
        from robolearn.twin.navigation import NavTwin

        DeployRuntime.check_fit(bundle, prof, prof.joint_names)
        robot_if = NavTwin(manifest.task, 1.0 / prof.control_hz, scenario=seed, layout_seed=layout_seed,
                           joint_names=prof.joint_names)
        try:
            nav_link = navigation_link(prof, manifest.navigation, path_topic=path_topic, goal_topic=goal_topic,
                                       pose=robot_if.base_pose, grid=robot_if.occupancy,
                                       clearance=robot_if.clearance, goal=robot_if.goal)
        except BaseException:
            robot_if.close()
            raise
    elif follows:  # a robot: odometry, map and path (or goals) over DDS
        if transport != "dds":
            raise ConfigError(f"{policy}: a path follower reads its pose, map and path over DDS: use --transport dds "
                              f"(or sim, the twin)")
        from robolearn.ros.navigation import navigation_link

        nav_link = navigation_link(prof, manifest.navigation, goal_topic=goal_topic,
                                   path_topic=None if goal_topic else path_topic or prof.dds.path_topic)
        try:
            robot_if = make_robot(prof, transport)
        except BaseException:
            nav_link.close()
            raise
    elif (observes_object or sees) and transport == "sim":  # the tabletop twin: the block, the goal, the cameras
        from robolearn.twin.tabletop import TabletopTwin

        DeployRuntime.check_fit(bundle, prof, prof.joint_names)  # before building a twin of the wrong robot
        robot_if = TabletopTwin.from_profile(prof, manifest.task, seed=seed)
        objects = robot_if.object_pose if observes_object else None
        if command is None and any(t.name == "target_pos" for t in manifest.observation):
            command = robot_if.goal.tolist()
    else:
        if observes_object:  # a real robot: the object's pose comes from a tracker over DDS (geometry_msgs/PoseStamped)
            if transport != "dds" or not prof.dds.object_topic:
                raise ConfigError(f"{policy}: the policy observes object_pose; give it a pose source: --transport dds "
                                  f"with dds.object_topic in {prof.source} (geometry_msgs/PoseStamped in the base "
                                  f"frame), or --transport sim")
            if command is None:
                goal = ", ".join(c.name for c in manifest.commands)
                raise ConfigError(f"{policy}: the policy's command is its goal ({goal}): give it with --cmd x,y,z")
            from robolearn.ros.dds import DdsPoseSource

            object_source = DdsPoseSource(prof.dds.object_topic, frame_id=prof.dds.object_frame,
                                          domain_id=prof.dds.domain_id,
                                          network_interface=prof.dds.network_interface or None)
            objects = object_source.read
        robot_if = make_robot(prof, transport)
    sources = _open_cameras(camera, manifest)
    try:
        feeds = {name: cam.read for name, cam in sources.items()}
        if transport == "sim" and hasattr(robot_if, "camera"):  # the tabletop twin renders the others itself
            for name in sees:
                if name not in feeds:
                    feeds[name] = robot_if.camera(name).read
        rt = DeployRuntime(bundle, prof, robot_if, objects=objects, cameras=feeds,
                           navigation=nav_link.sources if nav_link is not None else None)
    except BaseException:
        for cam in sources.values():
            cam.close()
        if nav_link is not None:
            nav_link.close()
        robot_if.close()
        raise
    if command is not None and not auto:
        rt.set_command(command)
    twist = None
    if transport == "dds":  # /cmd_vel over DDS (e.g. from a ROS 2 teleop node on the same network)
        from robolearn.ros.dds import DdsTwistSource

        twist = DdsTwistSource(prof.dds.cmd_vel_topic, domain_id=prof.dds.domain_id,
                               network_interface=prof.dds.network_interface or None)
    stop = threading.Event()
    keys = None if auto or not sys.stdin.isatty() else KeyControl(rt, stop)
    console.print(f"[bold]deploy[/] {bundle.folder} on {prof.name} via {transport}: control {prof.control_hz:g} Hz, "
                  f"policy {manifest.policy_hz:g} Hz" + ("" if keys is None else f"  keys: {KeyControl.HELP}"))
    no_robot = None
    # On a terminal the status line is live (rich redraws it below each log line); elsewhere (a pipe, a file) it
    # is printed once at the end, on a line of its own.
    live = Live(console=err, refresh_per_second=4, transient=False) if err.is_terminal else None
    last_status = [""]

    def on_status(line: str) -> None:
        last_status[0] = line
        if live is not None:
            live.update(line)

    try:
        with live if live is not None else contextlib.nullcontext():
            result = run_session(rt, duration=duration or float("inf"), auto=auto, command=command,
                                 on_status=on_status, stop=stop,
                                 command_source=twist.read if twist is not None else None)
    except KeyboardInterrupt:
        rt.stop()
        rt.spin(0.5)
        result = {**session_report(rt), "interrupted": True}
    except NoRobotState as exc:
        no_robot = str(exc)
        if transport == "dds":
            no_robot += (f"; is the robot on and publishing on DDS domain {prof.dds.domain_id} via interface "
                         f"{prof.dds.network_interface or '(cyclonedds default)'}?")
    finally:
        if keys is not None:
            keys.close()
        rt.close()
        rt.robot.close()
        if twist is not None:
            twist.close()
        if object_source is not None:
            object_source.close()
        if nav_link is not None:
            nav_link.close()
        for cam in sources.values():
            cam.close()
    if no_robot is not None:
        err.print(f"[red]error:[/] {escape(no_robot)}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_NO_ROBOT)
    if live is None and last_status[0]:
        err.print(last_status[0], markup=False, highlight=False, soft_wrap=True)
    if rt.follower is not None:
        result["navigation"] = _navigation_report(rt)
    code = EXIT_FAULT if result["ended_in_fault"] else EXIT_OK
    result["exit_code"] = code
    console.print_json(data=result)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2))
    if code != EXIT_OK:
        trips = result["trips"]
        why = trips[-1]["reason"] if trips else result["refused"][-1]["answer"]
        err.print(f"[red]ended in a fault:[/] {escape(why)} (exit {code}; the report's timeline has every change)",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(code)


@app.command(name="plan")
def plan(
    task: Annotated[str, typer.Option(help="navigation task whose layout is planned (go2-nav)")] = "go2-nav",
    seed: Annotated[int, typer.Option(help="the scenario in the layout library (as deploy --seed)")] = 0,
    layout_seed: Annotated[Optional[int], typer.Option(
        help="the layout library (as deploy --layout-seed; default: the task's training layouts)")] = None,
    topic: Annotated[str, typer.Option(help="nav_msgs/Path topic")] = "/plan",
    map_topic: Annotated[str, typer.Option(help="also publish the layout as nav_msgs/OccupancyGrid here")] = "",
    clearance_topic: Annotated[str, typer.Option(help="also publish the layout's overhead clearance here "
                                                      "(nav_msgs/OccupancyGrid, cm per cell)")] = "",
    frame: Annotated[str, typer.Option(help="frame_id of the path and the map")] = "odom",
    rate: Annotated[float, typer.Option(help="messages per second (Nav2 republishes its plan at 1 Hz)")] = 1.0,
    duration: Annotated[float, typer.Option(help="seconds to publish (0: until Ctrl-C)")] = 0.0,
    interface: Annotated[str, typer.Option(help="network interface (lo for a twin on this machine)")] = "lo",
    domain: Annotated[int, typer.Option(help="DDS domain id")] = 0,
) -> None:
    """Publish a navigation layout's planned path over DDS as nav_msgs/Path (and its map), as a navigation stack
    would: the subgoal source for `robolearn deploy --policy go2-nav --path-topic /plan` on the twin."""
    import time

    from robolearn.deploy.session import check_network_interface
    from robolearn.ros.navigation import PlanPublisher
    from robolearn.twin.navigation import load_scenario

    if not (math.isfinite(rate) and rate > 0) or not (math.isfinite(duration) and duration >= 0):
        raise ConfigError(f"--rate must be > 0 and --duration >= 0, got {rate:g} and {duration:g}")
    check_network_interface(interface, "--interface")
    sc = load_scenario(task, seed, layout_seed)
    publisher = PlanPublisher(topic, frame=frame, map_topic=map_topic, clearance_topic=clearance_topic,
                              domain_id=domain, network_interface=interface)
    console.print(f"[bold]plan[/] {task} scenario {seed}: {len(sc.path)} waypoints from "
                  f"({sc.start[0]:.2f}, {sc.start[1]:.2f}) to ({sc.goal[0]:.2f}, {sc.goal[1]:.2f}) on {topic} "
                  f"({frame}) at {rate:g} Hz" + (f", map on {map_topic}" if map_topic else "")
                  + (f", clearance on {clearance_topic}" if clearance_topic else ""))
    start = time.monotonic()
    try:
        while duration == 0 or time.monotonic() - start < duration:
            publisher.publish(sc.path, sc.grid, sc.clearance)
            time.sleep(1.0 / rate)
    except KeyboardInterrupt:
        pass
    console.print(f"published {publisher.sent} paths")


def _navigation_report(rt) -> dict:
    """The path follower's end state (and on the twin: the goal distance and obstacle contacts)."""
    f = rt.follower
    out = {"goal": [round(float(v), 3) for v in f.goal], "goal_reached": bool(f.reached),
           "path_points": int(len(f.path)), "progress_point": int(f.progress)}
    if hasattr(rt.robot, "goal_distance"):
        out.update(twin_goal_distance_m=round(rt.robot.goal_distance(), 3),
                   twin_obstacle_contact_ticks=int(rt.robot.collisions))
    return out


def _open_cameras(options: list[str], manifest) -> dict:
    """`--camera NAME=opencv:SOURCE` -> {name: an open OpenCVCamera}; names must be cameras the policy sees."""
    from robolearn.teleop.camera import OpenCVCamera, parse_camera

    wanted = manifest.camera_names
    opened: dict = {}
    try:
        for option in options:
            name, sep, source = option.partition("=")
            if not sep or not name:
                raise ConfigError(f"--camera {option!r}: expected NAME=opencv:<index, device or file>, e.g. "
                                  f"front=opencv:0")
            if name not in wanted:
                raise ConfigError(f"--camera {name}: the policy sees no camera of that name (its cameras: "
                                  f"{', '.join(wanted) or 'none'})")
            opened[name] = OpenCVCamera(parse_camera(source))
    except BaseException:
        for cam in opened.values():
            cam.close()
        raise
    return opened

