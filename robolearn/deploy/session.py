"""One deploy session: pick the transport, build the runtime, drive the state machine, report.

The robot comes from robolearn.deploy.transports (`make_robot`, kept importable from here).

`run_session` drives the runtime: with `auto`, passive -> stand -> run (with the given command) -> stop
after `duration`; otherwise the caller's key handler sends requests. It returns a report (loop timing,
trips, and for the simulated robot the distance walked and the mean velocity).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from robolearn.deploy.runtime import DeployRuntime, Mode
from robolearn.deploy.transports import make_robot

__all__ = ["make_robot", "run_session", "status_line"]


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


def run_session(rt: DeployRuntime, *, duration: float, auto: bool, command: list[float] | None = None,
                on_status: Callable[[str], None] | None = None, stop: threading.Event | None = None,
                command_source: Callable[[], tuple[np.ndarray, float] | None] | None = None,
                command_timeout: float = 0.5) -> dict[str, Any]:
    """Run the runtime for `duration` seconds of real time (auto: stand, run, stop) and return a report.

    `command_source() -> (command, age s) | None` (e.g. /cmd_vel over DDS) overrides the command while fresh;
    a command older than `command_timeout` becomes zero: a silent teleop source means stop, not keep going."""
    stop = stop or threading.Event()
    robot = rt.robot
    sim = hasattr(robot, "base_pos")
    walk: dict[str, Any] = {}
    phase = {"name": "passive", "t": time.monotonic()}

    def on_tick(r: DeployRuntime) -> None:
        now = time.monotonic()
        if auto:
            if phase["name"] == "passive" and now - phase["t"] > 0.5:
                r.stand()
                phase.update(name="stand", t=now)
            elif phase["name"] == "stand" and r.stand_progress() >= 1.0 and now - phase["t"] > 0.2:
                if command is not None and r.kinematics is not None:
                    r.set_command(command)  # an arm's target is part of its observation from the first step
                r.run()
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
            else:
                walk.update(end=robot.base_pos, t1=now)
        if command_source is not None and r.ticks % 10 == 0:
            latest = command_source()
            if latest is not None:
                r.set_command(latest[0] if latest[1] < command_timeout else np.zeros(3))
        if on_status is not None and r.ticks % 50 == 0:
            on_status(status_line(r))

    start = time.monotonic()
    auto_stop = 1.0 if auto else 0.0  # seconds of damping at the end of an auto session
    rt.spin(max(0.0, duration - auto_stop), stop=stop, on_tick=on_tick)
    if auto and not stop.is_set():
        rt.stop()
        rt.spin(auto_stop, stop=stop, on_tick=on_tick)
    report: dict[str, Any] = {
        "duration_s": round(time.monotonic() - start, 3),
        "final_mode": rt.mode.value,
        "timing": {k: round(float(v), 4) for k, v in rt.stats.summary().items()},
        "trips": [{"time_s": round(t.time, 4), "tick": t.tick, "mode": t.mode, "reason": t.reason} for t in rt.trips],
    }
    if sim and rt.kinematics is not None:
        report["sim"] = {}
        if "ee" in walk:  # arm: how close the end effector was to the commanded target at the end of Run
            report["sim"].update(run_time_s=round(walk["t1"] - walk["t0"], 3),
                                 ee_pos_m=[round(float(x), 4) for x in walk["ee"]],
                                 ee_distance_to_command_m=round(float(np.linalg.norm(walk["ee"] - rt.command)), 4))
    elif sim:
        report["sim"] = {"final_base_height_m": round(float(robot.base_pos[2]), 4)}
        if "end" in walk:
            dt = walk["t1"] - walk["t0"]
            delta = walk["end"] - walk["start"]
            report["sim"].update(walk_time_s=round(dt, 3), walk_distance_m=round(float(np.linalg.norm(delta[:2])), 4),
                                 walk_mean_speed_m_s=round(float(np.linalg.norm(delta[:2]) / max(dt, 1e-9)), 4))
    return report
