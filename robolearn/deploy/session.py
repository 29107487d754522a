"""One deploy session: pick the transport, build the runtime, drive the state machine, report.

The robot comes from robolearn.deploy.transports (`make_robot`, kept importable from here).

`run_session` drives the runtime: it first waits for the robot's first state (`safety.first_state_timeout_s`,
else `NoRobotState`); with `auto`, passive -> stand -> run (with the given command) -> stop after `duration`;
otherwise the caller's key handler sends requests. It returns a report: loop timing, the timeline of mode
changes (time, tick, from -> to, reason), trips, requests the runtime refused in `auto`, what Damp does on this
interface, whether the session ended in a fault, and for the simulated robot the distance walked and the mean
velocity.

What is checked before anything moves (the CLI calls these before building the robot): `parse_command` and
`clip_command` (the command against the bundle's trained ranges), `check_network_interface`, `check_imu`.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from robolearn.deploy.bundle import BundleManifest
from robolearn.deploy.profile import HardwareProfile
from robolearn.deploy.runtime import IMU_TERMS, DeployRuntime, Mode
from robolearn.deploy.transports import make_robot
from robolearn.errors import ConfigError, RobolearnError

__all__ = ["NoRobotState", "make_robot", "run_session", "session_report", "damp_report", "status_line",
           "command_ranges", "parse_command", "clip_command", "network_interfaces", "check_network_interface",
           "imu_needs", "check_imu"]

log = logging.getLogger("robolearn.deploy")

# Short names of the command's components (messages, --cmd); other bundle command names are used as they are.
COMMAND_LABELS = {"lin_vel_x": "vx", "lin_vel_y": "vy", "ang_vel_yaw": "wz", "target_x": "x", "target_y": "y",
                  "target_z": "z"}


class NoRobotState(RobolearnError):
    """The robot sent no (complete) state within `safety.first_state_timeout_s` of the session's start."""


def command_ranges(manifest: BundleManifest) -> list[tuple[str, tuple[float, float]]]:
    """(name, trained range) of each command component, in command order (`commands` in deploy.yaml: a list of
    {name, range, ...} in version 2, a {name: range} mapping in version 1)."""
    commands = manifest.commands
    if isinstance(commands, dict):
        return [(k, (float(lo), float(hi))) for k, (lo, hi) in commands.items()]
    return [(c.name, (float(c.range[0]), float(c.range[1]))) for c in commands]


def _labels(manifest: BundleManifest) -> list[str]:
    names = [COMMAND_LABELS.get(name, name) for name, _ in command_ranges(manifest)]
    if len(names) == 3:
        return names
    return ["x", "y", "z"] if manifest.kind == "arm" else ["vx", "vy", "wz"]


def parse_command(text: str, manifest: BundleManifest, flag: str = "--cmd") -> np.ndarray:
    """'vx,vy,wz' (legged) or 'x,y,z' (an arm's target, m) -> 3 finite numbers, else a one-line ConfigError."""
    labels = ",".join(_labels(manifest))
    what = "a target position in m" if manifest.kind == "arm" else "a velocity command in m/s, m/s, rad/s"
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{flag}: expected three numbers '{labels}' ({what}), got {text!r}")
    return np.array(values)


def clip_command(command: np.ndarray | list[float], manifest: BundleManifest) -> tuple[np.ndarray, str | None]:
    """(the command clipped into the ranges the policy was trained on (`commands` in deploy.yaml), and None or a
    description of what was outside them, e.g. "vx 5 not in [-1, 1]")."""
    command = np.array(command, dtype=float)
    out = []
    for i, (name, (lo, hi)) in enumerate(command_ranges(manifest)[:len(command)]):
        if not lo <= command[i] <= hi:
            out.append(f"{COMMAND_LABELS.get(name, name)} {command[i]:g} not in [{lo:g}, {hi:g}]")
            command[i] = min(max(command[i], lo), hi)
    return command, ("; ".join(out) or None)


def network_interfaces() -> list[str]:
    """Names of this computer's network interfaces."""
    return [name for _, name in socket.if_nameindex()]


def check_network_interface(name: str, where: str) -> None:
    """A ConfigError naming `where` (a flag or a profile field) unless `name` is an interface here (or an address)."""
    try:
        ipaddress.ip_address(name)
        return
    except ValueError:
        pass
    names = network_interfaces()
    if name not in names:
        raise ConfigError(f"{where} {name!r}: no such network interface on this computer; "
                          f"its interfaces: {', '.join(names)}")


def imu_needs(profile: HardwareProfile, manifest: BundleManifest | None) -> list[str]:
    """What needs an IMU: the policy's IMU observation terms, and a legged robot's tilt check."""
    terms = [t.name for t in manifest.observation if t.name in IMU_TERMS] if manifest is not None else []
    return terms + (["the tilt check"] if profile.kind == "legged" else [])


def check_imu(profile: HardwareProfile, manifest: BundleManifest | None, transport: str) -> None:
    """A ConfigError before anything moves when the transport would give states without an IMU that is needed."""
    needs = imu_needs(profile, manifest)
    if not needs:
        return
    if transport == "dds" and profile.dds.protocol == "ros2":
        fields, topic = "dds.imu_topic (and ros2.imu_topic)", profile.dds.imu_topic or profile.ros2.imu_topic
    elif transport == "ros2":
        fields, topic = "ros2.imu_topic", profile.ros2.imu_topic
    else:
        return  # the twin and the Unitree protocol (rt/lowstate) carry the IMU in the state
    if not topic:
        key = fields.split()[0]
        raise ConfigError(f"{profile.source or profile.name}: {fields} is empty, but {', '.join(needs)} needs an IMU; "
                          f"set it, e.g. --set {key}=/imu/data")


def status_line(rt: DeployRuntime) -> str:
    s = rt.stats
    recent = list(s.periods)[-500:]
    rate = 1.0 / float(np.mean(recent)) if recent else 0.0
    worst = max(recent) * 1000.0 if recent else 0.0
    trip = rt.last_trip
    line = (f"{rt.mode.value:<7} loop {rate:6.1f} Hz  worst period {worst:5.2f} ms  "
            f"cmd [{rt.command[0]:+.2f} {rt.command[1]:+.2f} {rt.command[2]:+.2f}]")
    if rt.mode == Mode.STAND:
        line += f"  stand {rt.stand_progress():.0%}"
    line += f"  last trip: {trip.reason} (t={trip.time:.2f} s)" if trip else "  last trip: none"
    return line


def _waiting_for(rt: DeployRuntime) -> str:
    describe = getattr(rt.robot, "waiting_for", None)
    return describe() if describe is not None else "robot state"


def damp_report(rt: DeployRuntime) -> dict[str, Any]:
    """What Damp does on this robot's interface, and (position-only) when its hold stopped publishing."""
    if not rt.position_only:
        return {"interface": "torque (PD drives)", "behaviour": f"kp 0, kd {rt.profile.damping_kd:g} on every joint"}
    ended = None if rt.hold_ended is None else round(rt.hold_ended - rt._start_time, 4)
    return {"interface": "position-only", "hold_s": rt.profile.damp_hold_s, "hold_ended_at_s": ended,
            "behaviour": f"hold of the measured position for {rt.profile.damp_hold_s:g} s (damp_hold_s), "
                         f"then no more commands (the controller keeps its last target)"}


INTERVENTIONS_REPORTED = 100  # the latest safety-filter interventions listed in a report (all are counted)


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None  # JSON has no NaN


def session_report(rt: DeployRuntime, refused: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The parts of a report every session has: final mode, command, timing, timeline, trips, Damp, fault."""
    refused = refused or []
    return {
        "final_mode": rt.mode.value,
        "ended_in_fault": bool(rt.trips or refused),
        "command": [round(float(x), 4) for x in rt.command],
        "timing": {k: round(float(v), 4) for k, v in rt.stats.summary().items()},
        "timeline": [{"time_s": round(t.time, 4), "tick": t.tick, "from": t.from_mode, "to": t.to_mode,
                      "reason": t.reason} for t in rt.timeline],
        "trips": [{"time_s": round(t.time, 4), "tick": t.tick, "mode": t.mode, "reason": t.reason} for t in rt.trips],
        "refused": refused,
        "damp": damp_report(rt),
        **({"safety_filter": {**rt.filter.log.summary(), "interventions": [
            {"time_s": round(t - rt._start_time, 4), "risk": _finite(r), "chosen_risk": _finite(c), "kind": k}
            for t, r, c, k in list(rt.filter.log.recent)[-INTERVENTIONS_REPORTED:]]}} if rt.filter is not None else {}),
    }


def run_session(rt: DeployRuntime, *, duration: float, auto: bool, command: list[float] | None = None,
                on_status: Callable[[str], None] | None = None, stop: threading.Event | None = None,
                command_source: Callable[[], tuple[np.ndarray, float] | None] | None = None,
                command_timeout: float = 0.5, state_timeout: float | None = None) -> dict[str, Any]:
    """Run the runtime for `duration` seconds of real time (auto: stand, run, stop) and return a report.

    First waits up to `state_timeout` s (default: the profile's `safety.first_state_timeout_s`) for the robot's
    first state, raising `NoRobotState` (naming what did not arrive) when none comes; `duration` counts from it.
    In `auto`, a stand the runtime refuses ends the session (recorded in the report's `refused`).
    `command_source() -> (command, age s) | None` (e.g. /cmd_vel over DDS) overrides the command while fresh,
    clipped into the bundle's trained ranges (warned once); a command older than `command_timeout` becomes
    zero: a silent teleop source means stop, not keep going."""
    stop = stop or threading.Event()
    robot = rt.robot
    sim = hasattr(robot, "base_pos")
    walk: dict[str, Any] = {}
    refused: list[dict[str, Any]] = []
    warned = {"source": False}

    def status(r: DeployRuntime) -> None:
        if on_status is not None and r.ticks % 50 == 0:
            on_status(status_line(r))

    wait = rt.profile.safety.first_state_timeout_s if state_timeout is None else state_timeout
    t0 = time.monotonic()
    while rt.last_state is None and not stop.is_set():
        if time.monotonic() - t0 >= wait:
            raise NoRobotState(f"no {_waiting_for(rt)} within {wait:g} s (safety.first_state_timeout_s)")
        rt.spin(0.02, stop=stop, on_tick=status)
    phase = {"name": "passive", "t": time.monotonic()}

    def refuse(r: DeployRuntime, answer: str) -> None:
        refused.append({"time_s": round(r.clock() - r._start_time, 4), "tick": r.ticks, "answer": answer})
        log.error("auto: %s; ending the session", answer)
        phase.update(name="refused")
        stop.set()

    def on_tick(r: DeployRuntime) -> None:
        now = time.monotonic()
        if auto:
            if phase["name"] == "passive" and now - phase["t"] > 0.5:
                answer = r.stand()
                if answer != "stand":
                    refuse(r, answer)
                    return
                phase.update(name="stand", t=now)
            elif phase["name"] == "stand" and r.stand_progress() >= 1.0 and now - phase["t"] > 0.2:
                if command is not None and r.kinematics is not None:
                    r.set_command(command)  # an arm's target is part of its observation from the first step
                answer = r.run()
                if answer != "run":
                    refuse(r, answer)
                    return
                phase.update(name="settle", t=now)
            elif phase["name"] == "settle" and now - phase["t"] > 1.0:
                if command is not None:
                    r.set_command(command)
                phase.update(name="walk", t=now)
                if sim:
                    walk.update(start=robot.base_pos, t0=now)
        if sim and phase["name"] == "walk" and r.mode == Mode.RUN and r.ticks % 10 == 0:
            if r.kinematics is not None:  # arm: where the end effector is while the policy still runs
                walk.update(ee=r.kinematics.fk(r.last_state.q[r.index]), t1=now)
                if hasattr(robot, "goal_distance"):  # a tabletop twin: how close the object came to its goal
                    d = robot.goal_distance()
                    walk.update(goal=d, best_goal=min(d, walk.get("best_goal", d)))
            else:
                walk.update(end=robot.base_pos, t1=now)
        if command_source is not None and r.ticks % 10 == 0:
            latest = command_source()
            if latest is not None:
                clipped, outside = clip_command(latest[0] if latest[1] < command_timeout else np.zeros(3),
                                                r.bundle.manifest)
                if outside and not warned["source"]:
                    warned["source"] = True
                    log.warning("command source: %s (the ranges the policy was trained on); clipped", outside)
                r.set_command(clipped)
        status(r)

    start = time.monotonic()
    auto_stop = 1.0 if auto else 0.0  # seconds of damping at the end of an auto session
    rt.spin(max(0.0, duration - auto_stop), stop=stop, on_tick=on_tick)
    if auto and not stop.is_set():
        rt.stop()
        rt.spin(auto_stop, stop=stop, on_tick=on_tick)
    report: dict[str, Any] = {"duration_s": round(time.monotonic() - start, 3), **session_report(rt, refused)}
    if sim and rt.kinematics is not None:
        report["sim"] = {}
        if "ee" in walk:  # arm: how close the end effector was to the commanded target at the end of Run
            report["sim"].update(run_time_s=round(walk["t1"] - walk["t0"], 3),
                                 ee_pos_m=[round(float(x), 4) for x in walk["ee"]],
                                 ee_distance_to_command_m=round(float(np.linalg.norm(walk["ee"] - rt.command)), 4))
        if "goal" in walk:
            report["sim"].update(object_goal_distance_m=round(float(walk["goal"]), 4),
                                 object_best_goal_distance_m=round(float(walk["best_goal"]), 4))
    elif sim:
        report["sim"] = {"final_base_height_m": round(float(robot.base_pos[2]), 4)}
        if "end" in walk:
            dt = walk["t1"] - walk["t0"]
            delta = walk["end"] - walk["start"]
            report["sim"].update(walk_time_s=round(dt, 3), walk_distance_m=round(float(np.linalg.norm(delta[:2])), 4),
                                 walk_mean_speed_m_s=round(float(np.linalg.norm(delta[:2]) / max(dt, 1e-9)), 4))
    return report
