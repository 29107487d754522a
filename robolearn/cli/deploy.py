"""`robolearn deploy`: a policy bundle on a robot (or its twin) through the deploy runtime and safety layer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from robolearn.cli.app import app, console, parse_sets
from robolearn.errors import RobolearnError

__all__ = ["deploy"]


@app.command()
def deploy(
    robot: Annotated[str, typer.Option(help="hardware profile name (hardware/<robot>.yaml) or YAML path")],
    policy: Annotated[Path, typer.Option(help="policy bundle folder (robolearn export) or shipped bundle name")],
    transport: Annotated[str, typer.Option(help="sim | dds | ros2")] = "sim",
    duration: Annotated[float, typer.Option(help="seconds to run (0: until Ctrl-C)")] = 0.0,
    auto: Annotated[bool, typer.Option(help="stand, run and stop on a timer instead of keys")] = False,
    cmd: Annotated[Optional[str], typer.Option(help="command while running: 'vx,vy,wz' (or a target x,y,z)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a profile field: key.sub=value")] = [],  # noqa: B006
    report: Annotated[Optional[Path], typer.Option(help="write the session report (timing, trips) as JSON")] = None,
) -> None:
    """Run a policy bundle on a robot through the deploy runtime (Passive -> Stand -> Run -> Damp).

    On a terminal, single keys drive it (listed at start); `--auto` stands, runs and stops on a timer.
    Ctrl-C damps and exits."""
    import json
    import logging
    import threading

    from rich.live import Live

    from robolearn.config import from_dict, merge, to_dict
    from robolearn.deploy.bundle import load_bundle
    from robolearn.deploy.keys import KeyControl
    from robolearn.deploy.profile import HardwareProfile, load_profile
    from robolearn.deploy.runtime import DeployRuntime
    from robolearn.deploy.session import make_robot, run_session

    if transport == "ros2":  # the rclpy node owns the loop; same profile, bundle and runtime
        from robolearn.ros.node import run_node

        run_node(["--ros-args", "-p", f"robot:={robot}", "-p", f"policy:={policy}"])
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("robolearn").setLevel(logging.INFO)
    prof = load_profile(robot)
    if set_:
        prof = from_dict(HardwareProfile, merge(to_dict(prof), parse_sets(set_)), where=f"{prof.source} (--set)")
    bundle = load_bundle(policy)
    command = None
    if cmd is not None:
        try:
            command = [float(x) for x in cmd.split(",")]
        except ValueError:
            raise RobolearnError(f"--cmd expects three numbers 'vx,vy,wz', got {cmd!r}") from None
    rt = DeployRuntime(bundle, prof, make_robot(prof, transport))
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
                  f"policy {bundle.manifest.policy_hz:g} Hz" + ("" if keys is None else f"  keys: {KeyControl.HELP}"))
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            result = run_session(rt, duration=duration or float("inf"), auto=auto, command=command,
                                 on_status=lambda line: live.update(line), stop=stop,
                                 command_source=twist.read if twist is not None else None)
    except KeyboardInterrupt:
        rt.stop()
        rt.spin(0.5)
        result = {"final_mode": rt.mode.value, "trips": [t.reason for t in rt.trips], "interrupted": True}
    finally:
        if keys is not None:
            keys.close()
        rt.close()
        rt.robot.close()
        if twist is not None:
            twist.close()
    console.print_json(data=result)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2))
