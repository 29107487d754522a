"""Teleop input devices against real kernel objects: a pty for the keyboard, FIFOs carrying the exact js_event and
HID report bytes for the gamepad and the SpaceMouse, a MuJoCo SimRobot as the leader arm. Nothing is mocked."""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest

from robolearn.deploy.interface import JointCommand
from robolearn.errors import DeviceError
from robolearn.teleop import DEVICES, EVENTS, make_device
from robolearn.teleop.gamepad import JS_EVENT, JS_EVENT_AXIS, JS_EVENT_BUTTON, JS_EVENT_INIT, GamepadDevice
from robolearn.teleop.keyboard import KeyboardDevice
from robolearn.teleop.leader import LeaderArm
from robolearn.teleop.spacemouse import SpaceMouseDevice, find_spacemouse


def poll(device, until, timeout: float = 2.0):
    """Read `device` until `until(cmd, events_so_far)`; returns (last command, every event seen)."""
    events: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        cmd = device.read()
        events += cmd.events
        if until(cmd, events):
            return cmd, events
        assert time.monotonic() < deadline, f"timed out; last command {cmd}, events {events}"
        time.sleep(0.003)


# -- keyboard ------------------------------------------------------------------------------------------------------
@pytest.fixture
def pty():
    master, slave = os.openpty()
    yield master, slave
    os.close(master)
    os.close(slave)


def test_keyboard_axes_hold_gripper_and_terminal_restore(pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    dev = KeyboardDevice(fd=slave, hold=0.15)
    lflag = termios.tcgetattr(slave)[3]
    assert not lflag & termios.ICANON and not lflag & termios.ECHO and lflag & termios.ISIG  # Ctrl-C still SIGINT
    assert not dev.read().active

    os.write(master, b"w")
    t0 = time.monotonic()
    cmd, _ = poll(dev, lambda c, e: c.twist[0] == 1.0)
    assert cmd.active and np.all(cmd.twist[1:] == 0) and cmd.events == []
    cmd, _ = poll(dev, lambda c, e: not c.twist.any())  # no key-up from a terminal: the hold runs out
    assert 0.12 < time.monotonic() - t0 < 0.6 and not cmd.active

    for _ in range(8):  # auto-repeat (every 40 ms here) keeps the axis driven without a gap
        os.write(master, b"D")  # Caps Lock does not matter
        time.sleep(0.04)
        assert dev.read().twist[1] == -1.0
    poll(dev, lambda c, e: not c.twist.any())
    for key, index, sign in [(b"r", 2, 1), (b"f", 2, -1), (b"q", 5, 1), (b"e", 5, -1), (b"j", 3, 1), (b"k", 4, -1)]:
        os.write(master, key)
        cmd, _ = poll(dev, lambda c, e, i=index, s=sign: c.twist[i] == s)
    poll(dev, lambda c, e: not c.twist.any())

    os.write(master, b" ")
    cmd, _ = poll(dev, lambda c, e: c.gripper == 1.0)
    assert cmd.active and not cmd.twist.any()  # the toggle itself is input, once
    assert not dev.read().active and dev.read().gripper == 1.0
    os.write(master, b" ")
    poll(dev, lambda c, e: c.gripper == 0.0)

    dev.close()
    assert termios.tcgetattr(slave) == before
    dev.close()  # idempotent
    with pytest.raises(DeviceError, match="after close"):
        dev.read()


def test_keyboard_events_once_and_escape_sequences_ignored(pty):
    master, slave = pty
    with KeyboardDevice(fd=slave) as dev:
        os.write(master, b"\r\x7f\x08ntx")  # Enter (-> \n by the tty), DEL, BS, n, t, x
        _, events = poll(dev, lambda c, e: len(e) >= 6)
        assert events == ["save", "discard", "discard", "rerecord", "takeover", "quit"]
        time.sleep(0.1)
        assert dev.read().events == []  # each delivered exactly once

        # arrows, Ctrl+Right, F1 (xterm and Linux console), F5, Alt+w, a CSI split across writes: all ignored
        for chunk in [b"\x1b[A\x1b[B\x1b[C\x1b[D", b"\x1b[1;5C", b"\x1bOP", b"\x1b[[A", b"\x1b[15~", b"\x1bw",
                      b"\x1b[", b"1;2A"]:
            os.write(master, chunk)
            time.sleep(0.02)
        time.sleep(0.25)  # past the Esc timeout: a sequence start must not become a lone Esc
        os.write(master, b"t")
        cmd, events = poll(dev, lambda c, e: "takeover" in e)
        assert events == ["takeover"] and not cmd.twist.any()

        os.write(master, b"\x1b")  # a lone Esc: quit, after the escape timeout
        _, events = poll(dev, lambda c, e: len(e) >= 1)
        assert events == ["quit"]
        time.sleep(0.15)
        assert dev.read().events == []


def test_keyboard_restores_terminal_when_killed(pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    script = ("import sys, time\nfrom robolearn.teleop.keyboard import KeyboardDevice\n"
              "dev = KeyboardDevice(fd=int(sys.argv[1]))\nprint('ready', flush=True)\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(slave)], pass_fds=[slave], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert not termios.tcgetattr(slave)[3] & termios.ICANON
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    assert termios.tcgetattr(slave) == before


def test_keyboard_needs_a_tty():
    r, w = os.pipe()
    try:
        with pytest.raises(DeviceError, match="not a tty"):
            KeyboardDevice(fd=r)
    finally:
        os.close(r)
        os.close(w)


# -- gamepad -------------------------------------------------------------------------------------------------------
def js(value: int, kind: int, number: int, ms: int = 1000) -> bytes:
    return JS_EVENT.pack(ms, value, kind, number)


@pytest.fixture
def js_fifo(tmp_path):
    path = tmp_path / "js0"
    os.mkfifo(path)
    return path


def test_gamepad_axes_dead_zone_buttons_and_init(js_fifo):
    dev = make_device("gamepad", path=str(js_fifo), dead_zone=0.1)
    w = os.open(js_fifo, os.O_WRONLY)
    try:
        # the driver's init burst: A held, sticks at rest; a real "stick up" event marks the end
        os.write(w, js(1, JS_EVENT_BUTTON | JS_EVENT_INIT, 0) + js(0, JS_EVENT_AXIS | JS_EVENT_INIT, 1)
                 + js(-32767, JS_EVENT_AXIS | JS_EVENT_INIT, 2) + js(-32767, JS_EVENT_AXIS, 1))
        cmd, events = poll(dev, lambda c, e: c.twist[0] == 1.0)
        assert events == [] and cmd.active and cmd.gripper == 0.0  # init events: state only, no save

        os.write(w, js(0, JS_EVENT_BUTTON, 0) + js(0, JS_EVENT_AXIS, 1)  # A released (no event); then drift:
                 + js(int(0.05 * 32767), JS_EVENT_AXIS, 0))  # inside the dead zone
        cmd, events = poll(dev, lambda c, e: c.twist[0] == 0.0)
        assert not cmd.twist.any() and not cmd.active and events == []
        os.write(w, js(int(0.55 * 32767), JS_EVENT_AXIS, 0))  # left stick right: -vy, rescaled past the dead zone
        cmd, _ = poll(dev, lambda c, e: c.twist[1] != 0.0)
        assert cmd.twist[1] == pytest.approx(-0.5, abs=1e-3)
        record = js(-32767, JS_EVENT_AXIS, 4)  # right stick up: +vz, written in two halves
        os.write(w, js(0, JS_EVENT_AXIS, 0) + record[:3])
        time.sleep(0.02)
        os.write(w, record[3:] + js(32767, JS_EVENT_AXIS, 3) + js(-32767, JS_EVENT_AXIS, 7) + js(32767, 2, 6))
        cmd, _ = poll(dev, lambda c, e: c.twist[5] != 0.0)
        np.testing.assert_allclose(cmd.twist, [0, 0, 1, 1, 1, -1])  # stick right: -yaw; d-pad up/right: +pitch/roll

        for n in (3, 4, 6, 7):
            os.write(w, js(0, JS_EVENT_AXIS, n))
        os.write(w, js(1, JS_EVENT_BUTTON, 5))  # RB closes the gripper
        cmd, _ = poll(dev, lambda c, e: c.gripper == 1.0)
        assert cmd.active and not dev.read().active
        for number in (0, 1, 2, 3, 6):  # A B X Y Back, each pressed and released twice
            os.write(w, (js(1, JS_EVENT_BUTTON, number) + js(0, JS_EVENT_BUTTON, number)) * 2)
        os.write(w, js(1, JS_EVENT_BUTTON, 4))  # LB opens: the marker that everything before it was read
        cmd, events = poll(dev, lambda c, e: c.gripper == 0.0)
        assert events == [e for e in ("save", "discard", "rerecord", "takeover", "quit") for _ in range(2)]
        assert dev.read().events == []
    finally:
        os.close(w)
        dev.close()


def test_gamepad_axis_map_and_trigger_gripper(js_fifo):
    dev = GamepadDevice(str(js_fifo), dead_zone=0.0, axes={"vz": (2, 1.0), "wx": None}, buttons={"save": 7},
                        gripper_axis=5)
    w = os.open(js_fifo, os.O_WRONLY)
    try:
        assert dev.read().gripper == 0.0  # a trigger rests released
        os.write(w, js(16384, JS_EVENT_AXIS, 2) + js(32767, JS_EVENT_AXIS, 6) + js(0, JS_EVENT_AXIS, 5)
                 + js(1, JS_EVENT_BUTTON, 7))
        cmd, events = poll(dev, lambda c, e: c.twist[2] != 0 and e)
        assert cmd.twist[2] == pytest.approx(0.5, abs=1e-3) and cmd.twist[3] == 0.0 and events == ["save"]
        assert cmd.gripper == pytest.approx(0.5, abs=1e-3)
    finally:
        os.close(w)
        dev.close()


def test_gamepad_errors(tmp_path):
    with pytest.raises(DeviceError, match=r"/nonexistent/js7 does not exist.*ls /dev/input/js\*"):
        make_device("gamepad", path="/nonexistent/js7")
    with pytest.raises(DeviceError, match="unknown axes"):
        GamepadDevice(str(tmp_path / "js0"), axes={"vq": (0, 1.0)})
    with pytest.raises(DeviceError, match="unknown option.*deadzone.*valid options: axes, buttons, dead_zone"):
        make_device("gamepad", deadzone=0.1)
    with pytest.raises(DeviceError, match="valid devices: keyboard, gamepad, spacemouse, leader"):
        make_device("joystick")
    assert set(DEVICES) == {"keyboard", "gamepad", "spacemouse", "leader"}
    assert EVENTS == ("save", "discard", "rerecord", "quit", "takeover")
    assert all(isinstance(cls.HELP, str) and "\n" not in cls.HELP for cls in DEVICES.values())


# -- spacemouse ----------------------------------------------------------------------------------------------------
def fake_sysfs(root: Path, nodes: dict[str, tuple[int, int, str]]) -> tuple[str, str]:
    """A /sys/class/hidraw tree and a /dev folder with a FIFO per node; returns (sysfs, dev)."""
    dev = root / "dev"
    dev.mkdir(parents=True, exist_ok=True)
    for node, (vendor, product, name) in nodes.items():
        d = root / "sys" / "class" / "hidraw" / node / "device"
        d.mkdir(parents=True)
        (d / "uevent").write_text(f"DRIVER=hid-generic\nHID_ID=0003:{vendor:08X}:{product:08X}\nHID_NAME={name}\n"
                                  f"HID_PHYS=usb-0000:00:14.0-2/input0\nMODALIAS=hid:b0003g0001v{vendor:08X}\n")
        os.mkfifo(dev / node)
    return str(root / "sys"), str(dev)


def report(rid: int, *values: int) -> bytes:
    return bytes([rid]) + struct.pack(f"<{len(values)}h", *values)


def send(dev: SpaceMouseDevice, w: int, data: bytes) -> None:
    """Write one HID report and wait until the device parsed it (hidraw delivers one report per read)."""
    n = dev.reports
    os.write(w, data)
    deadline = time.monotonic() + 2.0
    while dev.reports == n:
        assert time.monotonic() < deadline, f"report {data.hex()} not parsed"
        time.sleep(0.002)


def test_spacemouse_discovery_reports_signs_and_buttons(tmp_path):
    sysfs, devdir = fake_sysfs(tmp_path, {"hidraw0": (0x046D, 0xC31C, "Logitech USB Keyboard"),
                                          "hidraw1": (0x1234, 0x0001, "Some Mouse"),
                                          "hidraw2": (0x046D, 0xC626, "3Dconnexion SpaceNavigator")})
    assert find_spacemouse(sysfs, devdir) == (os.path.join(devdir, "hidraw2"), "3Dconnexion SpaceNavigator")
    dev = make_device("spacemouse", sysfs=sysfs, dev=devdir, dead_zone=0.0)
    w = os.open(os.path.join(devdir, "hidraw2"), os.O_WRONLY)
    try:
        assert dev.path.endswith("hidraw2") and not dev.read().active
        send(dev, w, report(1, 350, -175, -350))  # 7-byte translation: push right, push away, lift
        send(dev, w, report(2, 35, -70, 700))  # 7-byte rotation
        cmd = dev.read()
        np.testing.assert_allclose(cmd.twist, [-0.5, 1.0, 1.0, -0.2, 0.1, -1.0])  # vx=ty vy=tx vz=-tz wx=ry wy=rx
        assert cmd.active and cmd.events == []
        send(dev, w, report(1, 0, 0, 0, 0, 0, 0))  # 13-byte combined report (wireless models): all at rest
        assert not dev.read().twist.any() and not dev.read().active
        send(dev, w, report(1, -70, 35, 175, 0, 350, -35))
        np.testing.assert_allclose(dev.read().twist, [0.1, -0.2, -0.5, 1.0, 0.0, 0.1])
        send(dev, w, report(1, 0, 0, 0, 0, 0, 0))

        send(dev, w, bytes([3, 0b01, 0]))  # left button: gripper toggles (on press only)
        cmd = dev.read()
        assert cmd.gripper == 1.0 and cmd.active and cmd.events == []
        send(dev, w, bytes([3, 0, 0]))
        assert dev.read().gripper == 1.0 and not dev.read().active
        send(dev, w, bytes([3, 0b10, 0]))  # right button: takeover, once
        send(dev, w, bytes([3, 0b11, 0]))  # left pressed while right held: toggles back, no second takeover
        send(dev, w, bytes([3, 0, 0]))
        cmd = dev.read()
        assert cmd.events == ["takeover"] and cmd.gripper == 0.0
        assert dev.read().events == []
    finally:
        os.close(w)
        dev.close()


def test_spacemouse_dead_zone_and_operator_behind(tmp_path):
    sysfs, devdir = fake_sysfs(tmp_path, {"hidraw5": (0x256F, 0xC635, "3Dconnexion SpaceMouse Compact")})
    dev = SpaceMouseDevice(os.path.join(devdir, "hidraw5"), dead_zone=0.1, operator_side="behind")
    w = os.open(os.path.join(devdir, "hidraw5"), os.O_WRONLY)
    try:
        send(dev, w, report(1, 10, -20, 30, 0, 0, 0))  # drift: inside the dead zone
        assert not dev.read().twist.any() and not dev.read().active
        send(dev, w, report(1, 350, -175, -350, 35, -70, 700))
        np.testing.assert_allclose(dev.read().twist, [0.4 / 0.9, -1.0, 1.0, 0.1 / 0.9, 0.0, -1.0], atol=1e-9)
    finally:
        os.close(w)
        dev.close()


def test_spacemouse_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeviceError, match=r"no 3Dconnexion device found; scanned .*class/hidraw/\*/device/uevent "
                                          r"\(no hidraw nodes"):
        SpaceMouseDevice(sysfs=str(tmp_path / "empty"))
    sysfs, devdir = fake_sysfs(tmp_path / "kbd", {"hidraw0": (0x046D, 0xC31C, "Logitech USB Keyboard")})
    with pytest.raises(DeviceError, match="hidraw0 046d:c31c Logitech USB Keyboard"):
        SpaceMouseDevice(sysfs=sysfs, dev=devdir)
    with pytest.raises(DeviceError, match="does not exist"):
        SpaceMouseDevice(str(tmp_path / "hidraw9"))
    with pytest.raises(DeviceError, match="operator_side"):
        SpaceMouseDevice(str(tmp_path / "hidraw9"), operator_side="left")


def test_spacemouse_permission_denied_hints_udev(tmp_path):
    node = tmp_path / "hidraw3"
    os.mkfifo(node, 0o000)
    if os.geteuid() != 0:
        with pytest.raises(DeviceError, match="permission denied.*udev rule.*256f"):
            SpaceMouseDevice(str(node))
        return
    # root opens any node: try it from a forked child that dropped to an unprivileged user
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                SpaceMouseDevice(str(node))
                message = "opened"
            except DeviceError as e:
                message = str(e)
            os.write(w, message.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        message = f.read()
    os.waitpid(pid, 0)
    assert "permission denied" in message and "udev rule" in message and "256f" in message, message


# -- leader arm ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def panda():
    from robolearn.twin.sim_robot import SimRobot

    return SimRobot("panda", lockstep=False)


def test_leader_follows_by_name_active_and_gripper(panda):
    names = list(panda.joint_names)
    follower = [names[3], names[0], names[6], names[1], names[5], names[2], names[4]]
    start = panda.read().q.copy()
    dev = make_device("leader", leader=panda, joint_names=follower, gripper_joint="panda_joint7",
                      gripper_open=float(start[6]), gripper_closed=float(start[6]) + 0.4, active_window=0.1)
    order = [names.index(j) for j in follower]
    cmd = dev.read()
    np.testing.assert_allclose(cmd.joint_pos, start[order])
    assert not cmd.active and cmd.events == [] and not cmd.twist.any()
    assert cmd.gripper == pytest.approx(0.0, abs=1e-3)

    target = start + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.2, 0.2])
    panda.write(JointCommand(q=target, dq=np.zeros(7), kp=panda.kp, kd=panda.kd, tau=np.zeros(7)))
    seen_active = False
    for _ in range(40):  # 0.8 s of leader motion, read every 10 ms of sim time
        for _ in range(5):
            panda.advance()
        cmd = dev.read()
        np.testing.assert_allclose(cmd.joint_pos, panda.read().q[order])  # follows, in the follower's order
        seen_active |= cmd.active
    assert seen_active
    for _ in range(1000):  # settle
        panda.advance()
    q = panda.read().q
    np.testing.assert_allclose(q, target, atol=0.05)
    cmd, _ = poll(dev, lambda c, e: not c.active)  # still: inactive once the window passed
    np.testing.assert_allclose(cmd.joint_pos, q[order])
    assert cmd.gripper == pytest.approx((q[6] - start[6]) / 0.4, abs=1e-6) and 0.4 < cmd.gripper < 0.6


def test_leader_stale_or_nan_holds(panda, caplog):
    dev = LeaderArm(panda, list(panda.joint_names), timeout=0.1)
    assert dev.read().joint_pos is not None
    caplog.set_level(logging.INFO, logger="robolearn.teleop")
    try:
        panda.inject_fault("stale_state")  # readings stop updating
        assert dev.read().joint_pos is not None  # fresh for `timeout`
        time.sleep(0.15)
        for _ in range(3):
            cmd = dev.read()
            assert cmd.joint_pos is None and not cmd.active
        panda.inject_fault("nan_state")
        cmd = dev.read()
        assert cmd.joint_pos is None and not cmd.active
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "old" in warnings[0].getMessage()  # one outage, reported once
        panda.inject_fault("none")
        cmd = dev.read()
        np.testing.assert_allclose(cmd.joint_pos, panda.read().q)
        assert not cmd.active  # coming back is not motion
        panda.inject_fault("nan_state")
        assert dev.read().joint_pos is None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2 and "NaN" in warnings[1].getMessage()
    finally:
        panda.inject_fault("none")


def test_leader_errors(panda):
    with pytest.raises(DeviceError, match=r"\['elbow'\] are not joints of the leader.*panda_joint1"):
        make_device("leader", leader=panda, joint_names=["panda_joint1", "elbow"])
    with pytest.raises(DeviceError, match="needs gripper_open and gripper_closed"):
        LeaderArm(panda, ["panda_joint1"], gripper_joint="panda_joint7")
    with pytest.raises(DeviceError, match="missing option.*joint_names"):
        make_device("leader", leader=panda)
