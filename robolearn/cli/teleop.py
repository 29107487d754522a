"""`robolearn record` (demonstrations from an expert or a policy) and `robolearn teleop` (a person drives, in
simulation or on a real arm)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from robolearn.cli.app import app, console, parse_sets
from robolearn.errors import RobolearnError

__all__ = ["record", "teleop"]


def _policy_fn(policy: str, task_name: str) -> Any:
    """`--policy expert` (the task's scripted expert) or a run folder / checkpoint trained on `task_name`:
    a function (task, obs) -> actions [1, A]."""
    if policy == "expert":
        from robolearn.teleop.experts import make_expert

        experts: dict[int, Any] = {}

        def act(task: Any, obs: Any) -> Any:
            expert = experts.setdefault(id(task), make_expert(task))
            return expert.act()

        return act
    from robolearn.learn.checkpoint import load_policy

    _, net, _ = load_policy(Path(policy), task=task_name)
    if net.history > 1:
        raise RobolearnError(f"--policy {policy}: a student that reads a {net.history}-frame history cannot drive "
                             "the recorder yet; record with its teacher or a PPO policy")
    net.eval()

    def act(task: Any, obs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return net.act_mean(net.actor_input(obs))

    return act


HOLD_HELP = ("seconds an episode goes on once the task succeeds, so the demos show the robot stopping at the goal "
             "(default 2; 0: episodes run to the time limit)")


def _record(task: str, dataset: Path, episodes: int, driver_factory: Any, *, seed: int, rosbag: bool,
            realtime: bool, overrides: dict[str, Any], report: Optional[Path], help_line: str = "",
            hold_after_success: Optional[float] = None) -> None:
    import json

    from rich.live import Live

    from robolearn.cli.export import output_folder
    from robolearn.teleop.recorder import Recorder

    if report is not None:
        with output_folder(report.parent, "--report folder"):  # checked before anything is recorded
            pass
    with output_folder(dataset, "--dataset"):
        hold = {} if hold_after_success is None else {"hold_after_success_s": hold_after_success}
        recorder = Recorder(task, dataset, driver_factory, seed=seed, overrides=overrides, rosbag=rosbag,
                            realtime=realtime, **hold)
    console.print(f"[bold]recording[/] {task} at {recorder.fps} fps into {dataset} "
                  f"({recorder.writer.num_episodes} episodes there already)"
                  + (f"\n{help_line or recorder.driver.help}" if (help_line or recorder.driver.help) else ""),
                  highlight=False)
    others = sorted({s["task"] for s in recorder.sessions[:-1]} - {task})
    if others:  # a dataset may mix tasks: each episode keeps its own (LeRobot task, meta/robolearn.json)
        console.print(f"note: {dataset} also holds episodes of {', '.join(others)}; each episode keeps its own task "
                      f"(LeRobot task {recorder.language!r} for these)", highlight=False, markup=False)
    live_line = console.is_terminal

    def on_episode(record: dict[str, Any]) -> None:
        if not live_line:
            console.print(f"episode {record['episode_index']}: {record['frames']} frames, "
                          f"success {record['success']}", highlight=False)

    try:
        with Live(console=console, refresh_per_second=4, transient=False, auto_refresh=live_line) as live:
            result = recorder.run(episodes, on_status=(lambda line: live.update(line)) if live_line else None,
                                  on_episode=on_episode)
    finally:
        recorder.close()
    data = result.as_dict()
    console.print(f"saved {result.episodes_saved} episodes ({result.successes} successful, "
                  f"{result.episodes_discarded} discarded), {result.frames} frames in {result.wall_time_s:.1f} s: "
                  f"{result.achieved_fps:.1f} fps (target {result.target_fps:.0f}, worst second "
                  f"{result.worst_second_fps:.0f}, late frames {result.late_frames}); loop p50 "
                  f"{result.loop_ms_p50:.1f} ms, p99 {result.loop_ms_p99:.1f} ms", highlight=False)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(data, indent=2))


@app.command()
def record(
    task: Annotated[str, typer.Option(help="manipulation task to record (panda-push, panda-lift)")] = "panda-push",
    dataset: Annotated[Path, typer.Option(help="dataset folder (LeRobot v3); appended to if it exists")] = Path(
        "datasets/panda-push"),
    expert: Annotated[bool, typer.Option(help="drive with the task's scripted expert")] = False,
    policy: Annotated[Optional[str], typer.Option(help="drive with a trained policy (run folder, checkpoint)")] = None,
    episodes: Annotated[int, typer.Option(help="episodes to save")] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    rosbag: Annotated[bool, typer.Option(help="also write each episode as rosbag2 (MCAP), DATASET/rosbag")] = False,
    realtime: Annotated[bool, typer.Option(help="pace the loop at the task's fps (as with a person)")] = True,
    set_: Annotated[list[str], typer.Option("--set", help="override a task field: key.sub=value")] = [],  # noqa: B006
    report: Annotated[Optional[Path], typer.Option(help="write the recording report (fps, episodes) as JSON")] = None,
    hold_after_success: Annotated[Optional[float], typer.Option(help=HOLD_HELP)] = None,
) -> None:
    """Record demonstrations without a person: the scripted expert (--expert) or a trained policy (--policy)."""
    from robolearn.teleop.recorder import Driver, ExpertDriver, Step

    if expert == (policy is not None):
        raise RobolearnError("record needs exactly one driver: --expert or --policy RUN")
    if episodes < 1:
        raise RobolearnError(f"--episodes must be >= 1, got {episodes}")
    if expert:
        factory: Any = ExpertDriver
    else:
        act = _policy_fn(policy, task)

        class PolicyDriver(Driver):
            def act(self, task_: Any, obs: Any) -> Any:
                return Step(act(task_, obs))

        factory = lambda _task: PolicyDriver()  # noqa: E731
    _record(task, dataset, episodes, factory, seed=seed, rosbag=rosbag, realtime=realtime,
            overrides=parse_sets(set_), report=report, hold_after_success=hold_after_success)


SIM_ROBOTS = {"panda-sim": "the simulated Franka Panda with gripper (tasks panda-push, panda-lift)"}


@app.command()
def teleop(
    robot: Annotated[str, typer.Option(help=f"{', '.join(SIM_ROBOTS)} (a simulated scene with cameras), or an arm's "
                                            "hardware profile (panda, so100) driven through --transport")
                     ] = "panda-sim",
    device: Annotated[str, typer.Option(help="keyboard | gamepad | spacemouse | leader")] = "keyboard",
    dataset: Annotated[Optional[Path], typer.Option(help="dataset folder (LeRobot v3); appended to if it exists; "
                                                         "required for panda-sim")] = None,
    task: Annotated[str, typer.Option(help="panda-sim: the task (scene) to record")] = "panda-push",
    policy: Annotated[Optional[str], typer.Option(help="panda-sim: a policy drives and you take over "
                                                       "(interventions): 'expert' or a run folder")] = None,
    episodes: Annotated[int, typer.Option(help="episodes to save")] = 10,
    transport: Annotated[str, typer.Option(help="hardware profiles: sim (the MuJoCo twin) | dds")] = "sim",
    duration: Annotated[float, typer.Option(help="hardware profiles: seconds to run (0: until quit)")] = 0.0,
    max_speed: Annotated[float, typer.Option(help="hardware profiles: end-effector speed at full input, m/s")] = 0.1,
    device_path: Annotated[Optional[str], typer.Option(help="device node (/dev/input/js0, /dev/hidraw3)")] = None,
    leader: Annotated[Optional[str], typer.Option(help="leader arm: hardware profile (device leader)")] = None,
    leader_transport: Annotated[str, typer.Option(help="leader arm transport: sim | dds")] = "dds",
    seed: Annotated[int, typer.Option()] = 0,
    rosbag: Annotated[bool, typer.Option(help="also write each episode as rosbag2 (MCAP), DATASET/rosbag")] = False,
    set_: Annotated[list[str], typer.Option("--set", help="override a task field: key.sub=value")] = [],  # noqa: B006
    report: Annotated[Optional[Path], typer.Option(help="write the session report as JSON")] = None,
    camera: Annotated[Optional[str], typer.Option(help="hardware profiles: record a real camera, opencv:<index, "
                                                       "/dev/videoN or a video file> (robolearn[camera])")] = None,
    camera_size: Annotated[Optional[str], typer.Option(help="--camera frame size HEIGHTxWIDTH (e.g. 240x320); "
                                                            "frames are resized to it")] = None,
    camera_fps: Annotated[Optional[float], typer.Option(help="--camera frame rate asked of the driver")] = None,
    camera_exposure: Annotated[Optional[float], typer.Option(help="--camera exposure, driver units, where the "
                                                                  "driver allows it")] = None,
    hold_after_success: Annotated[Optional[float], typer.Option(help="panda-sim: " + HOLD_HELP)] = None,
) -> None:
    """Teleoperate a robot and record demonstrations (LeRobot v3 dataset). panda-sim: a simulated scene with a
    camera, optionally under a policy you can take over (the intervention flag marks the frames you drove). A
    hardware profile: the real arm (or its twin) through the deploy runtime's transports, with the safety layer.
    ROS 2 robots: ros2 launch robolearn teleop.launch.py. Keys/buttons are listed at start."""
    from robolearn.teleop.devices import make_device
    from robolearn.teleop.recorder import InterventionDriver, TeleopDriver, leader_options

    options: dict[str, Any] = {}
    if device_path is not None:
        options["path"] = device_path
    overrides = parse_sets(set_)
    if device == "leader":
        if leader is None:
            raise RobolearnError("--device leader needs --leader PROFILE (the leader arm's hardware profile)")
        from robolearn.deploy.profile import load_profile
        from robolearn.deploy.session import make_robot

        options["leader"] = make_robot(load_profile(leader), leader_transport)
        overrides.setdefault("action_space", "joint")
    camera_spec = None
    if camera is not None:
        from robolearn.teleop.camera import parse_camera

        camera_spec = parse_camera(camera, size=camera_size, fps=camera_fps, exposure=camera_exposure)
        if robot in SIM_ROBOTS:
            raise RobolearnError(f"--camera records a real camera beside a real arm (--robot panda|so100); {robot} "
                                 "renders its own cameras")
    if robot not in SIM_ROBOTS:
        _teleop_hardware(robot, transport, device, options, dataset=dataset, episodes=episodes, duration=duration,
                         max_speed=max_speed, report=report, camera=camera_spec)
        return
    if dataset is None:
        raise RobolearnError("teleop --robot panda-sim records a dataset: give --dataset PATH")
    policy_fn = _policy_fn(policy, task) if policy is not None else None

    def factory(task_: Any) -> Any:
        opts = dict(options)
        if device == "leader":
            opts.update(leader_options(task_, list(opts["leader"].joint_names)))
        dev = make_device(device, **opts)
        return TeleopDriver(dev) if policy_fn is None else InterventionDriver(policy_fn, dev)

    _record(task, dataset, episodes, factory, seed=seed, rosbag=rosbag, realtime=True, overrides=overrides,
            report=report, hold_after_success=hold_after_success)


def _teleop_hardware(robot: str, transport: str, device: str, options: dict[str, Any], *, dataset: Optional[Path],
                     episodes: int, duration: float, max_speed: float, report: Optional[Path],
                     camera: Any = None) -> None:
    """Teleop of an arm through the deploy runtime's robot interfaces (ArmTeleop + safety layer); `camera` (a
    CameraSpec) is opened first and recorded beside the joints."""
    import json
    import math

    from rich.live import Live

    from robolearn.cli.export import output_folder
    from robolearn.deploy.profile import load_profile
    from robolearn.deploy.session import make_robot
    from robolearn.teleop.arm_teleop import ArmTeleop, record_arm_teleop
    from robolearn.teleop.devices import make_device

    if transport not in ("sim", "dds"):
        raise RobolearnError(f"--transport must be sim or dds for teleop, got {transport!r} (ROS 2: ros2 launch "
                             f"robolearn teleop.launch.py)")
    if not (math.isfinite(max_speed) and max_speed > 0):
        raise RobolearnError(f"--max-speed: expected an end-effector speed in m/s > 0, got {max_speed:g}")
    if not (math.isfinite(duration) and duration >= 0):
        raise RobolearnError(f"--duration: expected seconds >= 0 (0: until quit), got {duration:g}")
    for folder, option in ((dataset, "--dataset"), (report.parent if report else None, "--report folder")):
        if folder is not None:
            with output_folder(folder, option):  # checked before the arm is built
                pass
    prof = load_profile(robot)
    cam = None
    if camera is not None:
        if dataset is None:
            raise RobolearnError("--camera is recorded: give --dataset PATH")
        from robolearn.teleop.camera import OpenCVCamera

        cam = OpenCVCamera(camera)  # a missing camera is an error before the arm is touched
    try:
        arm = make_robot(prof, transport)
    except BaseException:
        if cam is not None:
            cam.close()
        raise
    try:  # the arm's teleop first (a legged profile is refused), then the device
        teleop = ArmTeleop(prof, arm, max_speed=max_speed)
        if device == "leader":
            options["joint_names"] = list(prof.joint_names)
        dev = make_device(device, **options)
    except BaseException:
        arm.close()
        if cam is not None:
            cam.close()
        raise
    try:
        console.print(f"[bold]teleop[/] {prof.name} via {transport} with {device} at {prof.control_hz:g} Hz"
                      + (f", recording into {dataset}" if dataset else "")
                      + (f", camera {camera.name} {cam.shape[0]}x{cam.shape[1]}" if cam is not None else "")
                      + f"\n{getattr(dev, 'HELP', '')}",
                      highlight=False)
        live_line = console.is_terminal
        with Live(console=console, refresh_per_second=4, transient=False, auto_refresh=live_line) as live:
            def status(t: Any, rep: dict[str, Any]) -> None:
                if live_line:
                    pos = t.kin.fk(t.last_state.q[t.index]) if t.last_state is not None else [0, 0, 0]
                    live.update(f"ee [{pos[0]:+.3f} {pos[1]:+.3f} {pos[2]:+.3f}] m  frames {rep['frames']}  saved "
                                f"{rep['episodes_saved']}" + (f"  DAMPED: {t.damped}" if t.damped else ""))

            result = record_arm_teleop(teleop, dev, duration=duration or float("inf"), dataset=dataset,
                                       episodes=episodes, on_status=status,
                                       camera=cam.read if cam is not None else None,
                                       camera_shape=cam.shape if cam is not None else None)
    finally:
        dev.close()
        arm.close()
        if cam is not None:
            cam.close()
    console.print_json(data=result)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2))
