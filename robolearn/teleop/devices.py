"""Teleoperation input devices: one `TeleopCommand` per `read()`, whatever the device.

    keyboard    a plain terminal (cbreak mode; no X server, no root)           robolearn.teleop.keyboard
    gamepad     the Linux joystick API, /dev/input/js*                          robolearn.teleop.gamepad
    spacemouse  a 3Dconnexion SpaceMouse through /dev/hidraw*                   robolearn.teleop.spacemouse
    leader      a leader arm behind any `RobotInterface` (leader-follower)      robolearn.teleop.leader

The devices read the Linux kernel interfaces directly with the standard library (termios, struct, select, os)
instead of evdev / hidapi / pygame: those need native builds or shared libraries on the robot computer, while the
kernel interfaces used here (tty line discipline, the 8-byte js_event, raw HID reports) are small and stable.

Threading: the stream devices read on a daemon thread and keep the latest state under a lock, so `read()` never
blocks; a device whose reader stopped on an error (unplugged) raises `DeviceError` from the next `read()`.
"""

from __future__ import annotations

import inspect
import logging
import os
import select
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn.errors import DeviceError

__all__ = ["EVENTS", "TWIST_AXES", "TeleopCommand", "TeleopDevice", "StreamDevice", "DEVICES", "make_device",
           "dead_zone", "open_node"]

log = logging.getLogger("robolearn.teleop")

EVENTS = ("save", "discard", "rerecord", "quit", "takeover")  # one-shot episode/recorder controls
TWIST_AXES = ("vx", "vy", "vz", "wx", "wy", "wz")  # TeleopCommand.twist order


@dataclass
class TeleopCommand:
    """What the human asks for at one read. The recorder scales `twist` to m/s and rad/s."""

    twist: np.ndarray  # [6] in [-1, 1]: vx, vy, vz, wx, wy, wz of the end effector, robot base frame
    gripper: float  # target, 0 = open .. 1 = closed
    joint_pos: np.ndarray | None = None  # leader-follower: leader joint positions in the follower's joint order
    active: bool = False  # the human is giving input right now (non-zero twist, gripper change, leader moving)
    events: list[str] = field(default_factory=list)  # EVENTS that happened since the previous read()


class TeleopDevice(ABC):
    """An input device. `read()` never blocks; each event is delivered by exactly one `read()`."""

    name: str
    HELP: str  # one line: which input does what (printed by the recorder)

    @abstractmethod
    def read(self) -> TeleopCommand:
        """The latest state plus the events since the previous read."""

    @abstractmethod
    def close(self) -> None:
        """Stop reading and release the device (restore the terminal, close the node). Idempotent."""

    def __enter__(self) -> TeleopDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dead_zone(x: np.ndarray | float, width: float) -> np.ndarray:
    """Zero inside +-width, rescaled outside so the output still spans [-1, 1] without a step at the edge."""
    x = np.clip(np.asarray(x, dtype=float), -1.0, 1.0)
    if width <= 0.0:
        return x
    return np.sign(x) * np.clip((np.abs(x) - width) / (1.0 - width), 0.0, 1.0)


class StreamDevice(TeleopDevice):
    """A device whose input arrives on a file descriptor, read on a daemon thread.

    Subclasses implement `_on_data(bytes)` (and optionally `_on_idle()`, called when nothing arrived for
    `idle_s`); both run on the reader thread. `self.lock` guards the subclass's state and the event queue:
    hold it while changing state and calling `_emit`, and in `read()`."""

    idle_s = 0.05

    def _start(self, fd: int, *, owns_fd: bool, chunk: int = 4096) -> None:
        self.fd, self._owns_fd, self._chunk = fd, owns_fd, chunk
        self.lock = threading.Lock()
        self._events: list[str] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"teleop-{self.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self.fd], [], [], self.idle_s)
                if not ready:
                    self._on_idle()
                    continue
                try:
                    data = os.read(self.fd, self._chunk)
                except BlockingIOError:
                    continue
                if not data:  # end of file: a FIFO whose writer left; a real device node never ends
                    self._on_idle()
                    time.sleep(self.idle_s)
                    continue
                self._on_data(data)
        except Exception as e:  # handed to read(), which raises it as a DeviceError
            if not self._stop.is_set():
                self._error = e
                log.warning("teleop %s stopped reading: %s", self.name, e)

    def _on_data(self, data: bytes) -> None:
        raise NotImplementedError

    def _on_idle(self) -> None:
        """Nothing arrived for `idle_s` (or the stream ended)."""

    def _emit(self, event: str) -> None:
        """Queue a one-shot event for the next read (call with `self.lock` held)."""
        self._events.append(event)

    def _take_events(self) -> list[str]:
        """The events since the previous call (call with `self.lock` held)."""
        events, self._events = self._events, []
        return events

    def _check(self) -> None:
        if self._closed:
            raise DeviceError(f"teleop {self.name}: read() after close()")
        if self._error is not None:
            raise DeviceError(f"teleop {self.name}: the device stopped sending ({self._error}); is it still "
                              f"plugged in?")

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        if self._owns_fd:
            try:
                os.close(self.fd)
            except OSError:
                pass


def open_node(path: str, device: str, hint: str) -> int:
    """Open a device node read-only and non-blocking; a missing or forbidden node is a `DeviceError`."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DeviceError(f"{device}: {path} does not exist; is it plugged in? {hint}") from None
    except PermissionError:
        raise DeviceError(f"{device}: permission denied opening {path}. {hint}") from None
    except OSError as e:
        raise DeviceError(f"{device}: cannot open {path}: {e.strerror}. {hint}") from None


from robolearn.teleop.gamepad import GamepadDevice  # noqa: E402 - the device modules import the base above
from robolearn.teleop.keyboard import KeyboardDevice  # noqa: E402
from robolearn.teleop.leader import LeaderArm  # noqa: E402
from robolearn.teleop.spacemouse import SpaceMouseDevice  # noqa: E402

DEVICES: dict[str, type[TeleopDevice]] = {
    "keyboard": KeyboardDevice,
    "gamepad": GamepadDevice,
    "spacemouse": SpaceMouseDevice,
    "leader": LeaderArm,
}


def make_device(name: str, **options: Any) -> TeleopDevice:
    """The device `name` (a key of DEVICES) built with its keyword options; unknown names/options are errors."""
    if name not in DEVICES:
        raise DeviceError(f"unknown teleop device {name!r}; valid devices: {', '.join(DEVICES)}")
    cls = DEVICES[name]
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    allowed = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DeviceError(f"teleop device {name}: unknown option(s) {', '.join(unknown)}; valid options: "
                          f"{', '.join(sorted(allowed)) or 'none'}")
    required = [p.name for p in params if p.default is p.empty and p.name in allowed and p.name not in options]
    if required:
        raise DeviceError(f"teleop device {name}: missing option(s) {', '.join(required)}")
    return cls(**options)
