"""`robolearn deploy` as an operator runs it, and the session around the runtime: exit codes, the report's
timeline, flags checked before anything moves, a silent robot, the IMU over ROS 2 wire types, Damp on a
position-only interface, and log lines on a terminal.

Real components only: the CLI in a subprocess (on a pseudo-terminal for the status line), the MuJoCo twin, and
the DDS robot server (`robolearn.ros.dds_sim_server`) in another process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from dds_domain import new_domain

from robolearn.config import from_dict, merge, to_dict
from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.profile import HardwareProfile, load_profile
from robolearn.deploy.runtime import DeployRuntime, Mode
from robolearn.deploy.session import check_imu, session_report
from robolearn.errors import ConfigError
from robolearn.ros.dds import Ros2DdsRobot, robot_from_profile

ROOT = Path(__file__).resolve().parent.parent
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) robolearn")


def deploy(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "egl", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "robolearn.cli", "deploy", "--robot", "go2", "--policy", "go2-flat",
                           *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def deploy_on_a_terminal(*args: str, timeout: float = 90) -> tuple[int, str]:
    """Run `robolearn deploy` with stdout and stderr on one pseudo-terminal (200 columns); (exit code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {**os.environ, "MUJOCO_GL": "egl", "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "deploy", "--robot", "go2", "--policy",
                             "go2-flat", *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=ROOT,
                            env=env)
    os.close(slave)
    out, t0 = b"", time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), out.decode(errors="replace")
    finally:
        proc.kill()
        os.close(master)


def screen(text: str) -> list[str]:
    """What a terminal shows for `text`: carriage return, newline, cursor up, erase line; colours dropped."""
    lines: list[list[str]] = [[]]
    row = col = i = 0
    csi = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = csi.match(text, i)
            if m:
                params, op = m.groups()
                if op == "A":
                    row = max(0, row - int(params or 1))
                elif op == "K":
                    lines[row] = [] if params == "2" else lines[row][:col]
                i = m.end() if m else i + 1
                continue
            i += 1
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            while len(lines) <= row:
                lines.append([])
        else:
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        i += 1
    return ["".join(line) for line in lines]


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


# -- exit codes, report, flags ----------------------------------------------------------------------------------


def test_help_documents_the_exit_codes():
    out = deploy("-h", timeout=60)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for words in ("Exit codes: 0 the session ended without a fault", "2 bad input, nothing moved",
                  "3 the session ended in a fault", "4 no robot state within safety.first_state_timeout_s",
                  "--interface"):
        assert words in text, out.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--cmd", "1,2"), "error: --cmd: expected three numbers 'vx,vy,wz' (a velocity command in m/s, m/s, rad/s), "
                       "got '1,2'"),
    (("--cmd", "0.5,zero,0"), "error: --cmd: expected three numbers 'vx,vy,wz'"),
    (("--duration", "-5"), "error: --duration: expected seconds >= 0 (0: until Ctrl-C), got -5"),
    (("--transport", "dds", "--interface", "eth9"),
     "error: --interface 'eth9': no such network interface on this computer; its interfaces: "),
    # before: the session ran, then writing the report was a FileNotFoundError traceback (exit 1)
    (("--report", "/proc/robolearn/report.json"),
     "error: --report folder /proc/robolearn: cannot write there (/proc/robolearn: No such file or directory)"),
])
def test_bad_flags_are_refused_in_one_line_before_anything_moves(args, message):
    """Before: a wrong-arity --cmd failed only once the robot had stood up and started to run, --duration -5
    was accepted (exit 0), and a wrong interface was a DDS traceback."""
    out = deploy("--auto", "--duration", "3", *args) if "--duration" not in args else deploy("--auto", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    line = one_line_error(out)
    assert line.startswith(message), line
    assert "deploy " not in out.stdout  # the robot was never built: no banner, no stand
    if "eth9" in args:
        assert "lo" in line.split("its interfaces: ")[1].split(", ")


def test_a_safety_trip_ends_the_session_with_exit_3_and_a_timeline(tmp_path):
    """A joint speed limit the stand ramp exceeds: the runtime trips to Damp in Stand. Before: exit 0 and a
    report with only the final mode and the trips."""
    report = tmp_path / "deploy.json"
    out = deploy("--auto", "--duration", "3", "--set", "safety.velocity_limit_scale=0.01", "--report", str(report))
    assert out.returncode == 3, out.stderr
    result = json.loads(report.read_text())
    assert result["ended_in_fault"] is True and result["exit_code"] == 3 and result["final_mode"] == "damp"
    timeline = result["timeline"]
    assert [(e["from"], e["to"]) for e in timeline] == [("passive", "stand"), ("stand", "damp")], timeline
    assert timeline[0]["reason"] == "stand requested"
    assert timeline[1]["reason"].startswith("safety trip: joint ") and "rad/s, over its limit" in timeline[1]["reason"]
    assert 0 < timeline[0]["time_s"] < timeline[1]["time_s"] and 0 < timeline[0]["tick"] < timeline[1]["tick"]
    trip = result["trips"][0]
    assert (trip["tick"], "safety trip: " + trip["reason"]) == (timeline[1]["tick"], timeline[1]["reason"])
    assert result["damp"]["interface"] == "torque (PD drives)" and "kp 0, kd 8" in result["damp"]["behaviour"]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ended in a fault: joint ") and "(exit 3;" in last


def test_on_a_terminal_log_lines_start_on_a_fresh_line_and_the_command_is_clipped(tmp_path):
    """A clean session on a pseudo-terminal with --cmd 5,0,0 (trained range [-1, 1]): a one-line warning before
    anything moves, the command clipped to 1, every log line on a line of its own (before: appended to the
    status line), exit 0 and a timeline passive -> stand -> run -> damp."""
    report = tmp_path / "deploy.json"
    code, text = deploy_on_a_terminal("--auto", "--duration", "4", "--cmd", "5,0,0", "--set", "stand.duration_s=0.3",
                                      "--set", "sim.start=standing", "--set", "safety.policy_timeout_ms=500",
                                      "--report", str(report))
    lines = screen(text)
    assert code == 0, "\n".join(lines)
    warnings = [line for line in lines if "warning" in line]
    assert warnings == ["warning: --cmd 5,0,0: vx 5 not in [-1, 1] (the ranges the policy was trained on); "
                        "using 1,0,0"], lines
    logged = [line for line in lines if "robolearn.deploy:" in line]
    assert len(logged) >= 3, lines  # stand, run, stop
    for line in logged:
        assert LOG_LINE.match(line), line
        assert " loop " not in line, line  # no status text on a log line
    assert any(line.startswith("damp    loop") for line in lines), lines  # the status line is still shown
    result = json.loads(report.read_text())
    assert result["command"] == [1.0, 0.0, 0.0] and result["trips"] == [] and result["exit_code"] == 0
    assert [(e["from"], e["to"], e["reason"]) for e in result["timeline"]] == [
        ("passive", "stand", "stand requested"), ("stand", "run", "run requested"), ("run", "damp", "stop requested")]


def test_dds_without_a_robot_exits_4_naming_the_topic():
    """No robot server on the domain: before, the runtime sat passive for the whole --duration and exited 0."""
    domain = new_domain()
    t0 = time.monotonic()
    out = deploy("--transport", "dds", "--interface", "lo", "--set", f"dds.domain_id={domain}", "--set",
                 "safety.first_state_timeout_s=1", "--auto", "--duration", "60", timeout=45)
    assert out.returncode == 4, out.stderr
    assert time.monotonic() - t0 < 45
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no robot state on rt/lowstate within 1 s (safety.first_state_timeout_s); is the "
                           f"robot on and publishing on DDS domain {domain} via interface lo?"), out.stderr
    assert "Traceback" not in out.stderr


# -- over DDS with ROS 2 wire types (a ros2_control robot in another process) -----------------------------------


@pytest.fixture(scope="module")
def ros2_server():
    """The Go2 twin speaking ros2_control topics (JointState, Imu on the profile's /imu/data, position commands)."""
    domain = new_domain()
    server = subprocess.Popen([sys.executable, "-m", "robolearn.ros.dds_sim_server", "--robot", "go2", "--protocol",
                               "ros2", "--rate", "500", "--domain-id", str(domain), "--start", "standing"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # IMU topic: the profile's
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            line = server.stdout.readline()
            if line.strip() == "ready":
                break
            if not line and server.poll() is not None:
                pytest.fail(f"robot server did not start: {server.stderr.read()[-2000:]}")
        yield domain
    finally:
        server.kill()
        server.wait()


def ros2_profile(domain: int, **changes) -> HardwareProfile:
    data = merge(merge(to_dict(load_profile("go2")), {
        "stand": {"duration_s": 0.3},
        "dds": {"protocol": "ros2", "domain_id": domain, "network_interface": "lo"},
        "safety": {"state_timeout_ms": 250, "policy_timeout_ms": 500},  # 2 shared cores: see test_deploy_dds.py
    }), changes)
    return from_dict(HardwareProfile, data, where="test profile")


def wait_for_state(rt: DeployRuntime, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while rt.last_state is None and time.monotonic() - t0 < timeout:
        rt.spin(0.05)
    assert rt.last_state is not None, rt.robot.waiting_for()


def test_go2_profile_carries_the_imu_topic_for_both_protocols_and_runs_over_ros2_wire_types(ros2_server):
    """Before: dds.imu_topic was empty in hardware/go2.yaml, so over ROS 2 wire types the state had no IMU: Stand
    ran without a tilt check and Run tripped at once (the policy observes base_ang_vel)."""
    go2 = load_profile("go2")
    assert go2.dds.imu_topic == go2.ros2.imu_topic == "/imu/data"
    profile = ros2_profile(ros2_server)
    robot = robot_from_profile(profile)
    rt = DeployRuntime(load_bundle("go2-flat"), profile, robot)
    try:
        wait_for_state(rt)
        assert rt.last_state.quat is not None and rt.last_state.gyro is not None
        assert rt.stand() == "stand"
        rt.spin(profile.stand.duration_s + 0.2)
        assert rt.run() == "run", rt.trips
        rt.spin(0.3)
        assert rt.mode == Mode.RUN and rt.trips == [], rt.trips
        assert len(rt.stats.policy_latency) > 3
    finally:
        rt.close()
        robot.close()


def test_a_missing_imu_is_refused_before_stand(ros2_server):
    """With no IMU topic at all: the CLI's check names the field before anything is built, and the runtime
    itself refuses Stand on a state without IMU (before: it stood up, then Run tripped)."""
    blank = ros2_profile(ros2_server, dds={"imu_topic": ""}, ros2={"imu_topic": None})
    bundle = load_bundle("go2-flat")
    with pytest.raises(ConfigError, match=r"dds\.imu_topic \(and ros2\.imu_topic\) is empty, but base_ang_vel, "
                                          r"projected_gravity, the tilt check needs an IMU; set it, e\.g\. "
                                          r"--set dds\.imu_topic=/imu/data"):
        check_imu(blank, bundle.manifest, "dds")
    check_imu(load_profile("go2"), bundle.manifest, "dds")  # the shipped profile passes (unitree: IMU in lowstate)
    check_imu(ros2_profile(ros2_server), bundle.manifest, "dds")
    robot = Ros2DdsRobot(blank.joint_names, joint_states_topic="/joint_states", imu_topic=None,
                         domain_id=ros2_server, network_interface="lo")
    rt = DeployRuntime(bundle, blank, robot)
    try:
        wait_for_state(rt)
        assert rt.last_state.quat is None
        answer = rt.stand()
        assert answer.startswith("stand refused: the robot state has no IMU orientation/angular velocity, needed by "
                                 "base_ang_vel, projected_gravity, the tilt check"), answer
        rt.spin(0.05)
        assert rt.mode == Mode.PASSIVE and rt.timeline == []
    finally:
        rt.close()
        robot.close()


def test_damp_on_a_position_only_interface_holds_for_damp_hold_s_then_stops_publishing(ros2_server, caplog):
    """ros2_control position commands cannot say kp 0: Damp holds the measured position, and (before: for as
    long as the process lived) stops publishing after the profile's damp_hold_s; the report says so."""
    caplog.set_level(logging.WARNING, "robolearn.deploy")
    profile = ros2_profile(ros2_server, damp_hold_s=0.4)
    robot = robot_from_profile(profile)
    rt = DeployRuntime(load_bundle("go2-flat"), profile, robot)
    try:
        wait_for_state(rt)
        assert rt.position_only
        rt.stop()
        sent: list[tuple[float, int]] = []
        rt.spin(1.5, on_tick=lambda r: sent.append((time.monotonic(), robot.sent)))
        report = session_report(rt)
        damp_since = rt.damp_since
        assert rt.hold_ended is not None and 0.4 <= rt.hold_ended - damp_since < 0.6
        during = [n for t, n in sent if t < damp_since + 0.3]
        after = [n for t, n in sent if t > rt.hold_ended + 0.05]
        assert len(during) >= 2 and during[-1] > during[0]  # the hold is published at the loop rate
        assert len(after) >= 100 and len(set(after)) == 1, sent  # then nothing
        damp = report["damp"]
        assert damp["interface"] == "position-only" and damp["hold_s"] == 0.4
        assert damp["hold_ended_at_s"] == pytest.approx(rt.hold_ended - rt._start_time, abs=1e-3)
        assert "hold of the measured position for 0.4 s (damp_hold_s), then no more commands" in damp["behaviour"]
        assert report["timeline"][0]["reason"] == "stop requested" and report["ended_in_fault"] is False
        assert any("no longer publishing commands" in r.message for r in caplog.records)
        assert rt.reset() == "passive"  # leaving Damp publishes again (Passive: the measured position)
        rt.spin(0.2)
        assert robot.sent > after[-1]
    finally:
        rt.close()
        robot.close()


def test_profile_fields_are_checked():
    go2 = to_dict(load_profile("go2"))
    with pytest.raises(ConfigError, match="damp_hold_s: expected seconds >= 0, got -1"):
        from_dict(HardwareProfile, merge(go2, {"damp_hold_s": -1}), where="test")
    with pytest.raises(ConfigError, match="safety.first_state_timeout_s: expected seconds > 0, got 0"):
        from_dict(HardwareProfile, merge(go2, {"safety": {"first_state_timeout_s": 0}}), where="test")
    assert all(load_profile(name).damp_hold_s == 5.0 for name in ("go2", "panda", "so100"))
    assert np.isfinite(load_profile("go2").safety.first_state_timeout_s)
