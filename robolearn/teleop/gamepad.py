"""Gamepad teleop through the Linux joystick API (/dev/input/js*), read with the standard library.

pygame/evdev/inputs need SDL or a native build; the joystick API is one 8-byte record per change (linux/joystick.h):

    struct js_event { __u32 time; /* ms */  __s16 value;  __u8 type; /* 1 button, 2 axis, |0x80 init */  __u8 number; }

Axes report -32767..32767 (sticks: up and left are negative; triggers: -32767 released .. 32767 pressed). On open
the driver sends the current state as init events (type | 0x80): they set the state silently, never an event.

Default map (Xbox controllers under the xpad driver; other pads or drivers number their axes differently, so both
maps are options: `axes={"vz": (2, 1.0)}` or `buttons={"save": 7}`, `None` disables an entry):

    left stick   up/down +-vx, left/right +-vy      right stick  up/down +-vz, left/right +-yaw (wz)
    d-pad        left/right -+roll (wx), up/down +-pitch (wy)
    LB open the gripper, RB close it (or `gripper_axis=5`: the right trigger's travel is the gripper target)
    A save   B discard   X rerecord   Y takeover (toggle)   Back/View quit

Sticks pass a dead zone (`dead_zone`, fraction of full travel, rescaled so the output still reaches +-1).
"""

from __future__ import annotations

import struct

import numpy as np

from robolearn.errors import DeviceError
from robolearn.teleop.devices import EVENTS, TWIST_AXES, StreamDevice, TeleopCommand, dead_zone, open_node

__all__ = ["GamepadDevice", "JS_EVENT", "JS_EVENT_BUTTON", "JS_EVENT_AXIS", "JS_EVENT_INIT", "DEFAULT_AXES",
           "DEFAULT_BUTTONS"]

JS_EVENT = struct.Struct("=IhBB")  # time (ms), value, type, number: native byte order, like the kernel writes it
JS_EVENT_BUTTON, JS_EVENT_AXIS, JS_EVENT_INIT = 0x01, 0x02, 0x80
AXIS_MAX = 32767.0

# twist component -> (js axis number, sign): xpad numbers LX 0, LY 1, LT 2, RX 3, RY 4, RT 5, hat X 6, hat Y 7
DEFAULT_AXES: dict[str, tuple[int, float] | None] = {
    "vx": (1, -1.0), "vy": (0, -1.0), "vz": (4, -1.0), "wx": (6, 1.0), "wy": (7, -1.0), "wz": (3, -1.0),
}
# action -> js button number: xpad numbers A 0, B 1, X 2, Y 3, LB 4, RB 5, Back 6, Start 7, Guide 8
DEFAULT_BUTTONS: dict[str, int | None] = {
    "save": 0, "discard": 1, "rerecord": 2, "takeover": 3, "gripper_open": 4, "gripper_close": 5, "quit": 6,
}
BUTTON_ACTIONS = (*EVENTS, "gripper_open", "gripper_close")


class GamepadDevice(StreamDevice):
    """A gamepad on /dev/input/jsN -> TeleopCommand."""

    name = "gamepad"
    HELP = ("gamepad: left stick x/y | right stick z/yaw | d-pad roll/pitch | LB open, RB close gripper | A save | "
            "B discard | X rerecord | Y takeover | Back quit")

    def __init__(self, path: str = "/dev/input/js0", *, dead_zone: float = 0.1,
                 axes: dict[str, tuple[int, float] | None] | None = None,
                 buttons: dict[str, int | None] | None = None, gripper_axis: int | None = None) -> None:
        if not 0.0 <= dead_zone < 1.0:
            raise DeviceError(f"gamepad: dead_zone must be in [0, 1), got {dead_zone}")
        self.path, self.dead_zone = path, float(dead_zone)
        self.axes = _merge("axes", DEFAULT_AXES, axes, TWIST_AXES)
        for comp, spec in self.axes.items():
            if spec is not None and (len(spec) != 2 or int(spec[0]) < 0):
                raise DeviceError(f"gamepad: axes[{comp!r}] must be (axis number, sign), got {spec!r}")
        merged = _merge("buttons", DEFAULT_BUTTONS, buttons, BUTTON_ACTIONS)
        self.buttons = {int(num): action for action, num in merged.items() if num is not None}
        if len(self.buttons) != sum(num is not None for num in merged.values()):
            raise DeviceError(f"gamepad: two actions share a button in {merged}")
        self.gripper_axis = gripper_axis
        self._raw: dict[int, float] = {} if gripper_axis is None else {int(gripper_axis): -1.0}  # trigger: released
        self._held: dict[int, bool] = {}
        self._gripper = 0.0
        self._last_gripper = 0.0
        self._buf = b""
        fd = open_node(path, "gamepad", "List the joysticks with `ls /dev/input/js*` and pass the path "
                       "(--device-path /dev/input/jsN); reading them needs the `input` group "
                       "(sudo usermod -aG input $USER, then log in again).")
        self._start(fd, owns_fd=True, chunk=JS_EVENT.size * 64)

    # -- reader thread -----------------------------------------------------------------------------------
    def _on_data(self, data: bytes) -> None:
        buf = self._buf + data
        n = len(buf) - len(buf) % JS_EVENT.size
        with self.lock:
            for _, value, kind, number in JS_EVENT.iter_unpack(buf[:n]):
                init = bool(kind & JS_EVENT_INIT)
                kind &= ~JS_EVENT_INIT
                if kind == JS_EVENT_AXIS:
                    self._raw[number] = max(-1.0, value / AXIS_MAX)
                elif kind == JS_EVENT_BUTTON:
                    pressed, was = value != 0, self._held.get(number, False)
                    self._held[number] = pressed
                    if pressed and not was and not init:
                        self._press(self.buttons.get(number))
        self._buf = buf[n:]

    def _press(self, action: str | None) -> None:
        if action == "gripper_open":
            self._gripper = 0.0
        elif action == "gripper_close":
            self._gripper = 1.0
        elif action is not None:
            self._emit(action)

    # -- TeleopDevice ------------------------------------------------------------------------------------
    def read(self) -> TeleopCommand:
        self._check()
        with self.lock:
            raw = np.array([spec[1] * self._raw.get(int(spec[0]), 0.0) if spec is not None else 0.0
                            for spec in (self.axes[c] for c in TWIST_AXES)])
            if self.gripper_axis is not None:
                self._gripper = float(np.clip((self._raw[int(self.gripper_axis)] + 1.0) / 2.0, 0.0, 1.0))
            gripper = self._gripper
            events = self._take_events()
        twist = dead_zone(raw, self.dead_zone)
        changed = abs(gripper - self._last_gripper) > 0.02
        if changed:
            self._last_gripper = gripper
        return TeleopCommand(twist=twist, gripper=gripper, active=bool(np.any(twist)) or changed, events=events)


def _merge(what: str, defaults: dict, overrides: dict | None, valid: tuple[str, ...]) -> dict:
    """The default map with the caller's entries replacing (or, with None, disabling) the defaults."""
    unknown = sorted(set(overrides or {}) - set(valid))
    if unknown:
        raise DeviceError(f"gamepad: unknown {what} entries {unknown}; valid: {', '.join(valid)}")
    merged = dict(defaults)
    merged.update(overrides or {})
    return merged
