"""3Dconnexion SpaceMouse teleop through the kernel's raw HID nodes (/dev/hidraw*), read with the standard library.

pyspacemouse/hidapi/easyhid need libhidapi; hidraw hands out the device's HID reports as they are, one report per
read(), the first byte the report id (values int16 little-endian, about +-350 at full deflection):

    id 1  tx ty tz             7 bytes (SpaceNavigator, Compact, Pro ...)
    id 1  tx ty tz rx ry rz   13 bytes (SpaceMouse Wireless and newer models: translation and rotation together)
    id 2  rx ry rz             7 bytes
    id 3  button bitmask       bit 0 left button, bit 1 right button (two-button models)

The device frame: +tx pushes the cap right, +ty pulls it toward you, +tz presses it down; rx ry rz turn the cap
about those axes (right-handed). The robot base frame follows SERL (rail-berkeley/serl, franka_env/spacemouse/
spacemouse_expert.py: `[-y, x, z, -roll, -pitch, -yaw]` of pyspacemouse's state, which is `y = -ty, z = -tz,
pitch = -rx, roll = -ry`), i.e. with the operator in front of the robot, facing it (`operator_side="front"`):

    vx = ty  (pull toward you -> +x, toward you)      wx = ry
    vy = tx  (push right -> +y, to your right)        wy = rx
    vz = -tz (lift the cap -> +z, up)                 wz = -rz (turn the cap counterclockwise from above -> +yaw)

so the end effector moves and turns the way the cap does. `operator_side="behind"` (the operator behind the robot,
looking along its +x) turns that by 180 degrees about z: vx, vy, wx, wy change sign.

Buttons: left toggles the gripper (open <-> closed), right sends `takeover` (toggle). Save/discard come from another
device (the keyboard). Models with more buttons (Pro, Enterprise) put other keys on bits 0/1 (Menu, Fit).

The node is found by scanning `<sysfs>/class/hidraw/*/device/uevent` for HID_ID vendor 256f (3Dconnexion) or 046d
(Logitech) with a 3Dconnexion product id; `path` picks one. Non-root access needs a udev rule (UDEV_HINT).
"""

from __future__ import annotations

import glob
import logging
import os
import struct

import numpy as np

from robolearn.errors import DeviceError
from robolearn.teleop.devices import StreamDevice, TeleopCommand, dead_zone, open_node

__all__ = ["SpaceMouseDevice", "find_spacemouse", "VENDOR_3DCONNEXION", "VENDOR_LOGITECH", "LOGITECH_PRODUCTS",
           "UDEV_HINT"]

log = logging.getLogger("robolearn.teleop")

VENDOR_3DCONNEXION = 0x256F  # every product: SpaceMouse Compact/Wireless/Pro/Enterprise, Universal Receiver
VENDOR_LOGITECH = 0x046D  # older 3Dconnexion devices were sold under Logitech's vendor id
LOGITECH_PRODUCTS = {
    0xC603: "SpaceMouse Plus USB", 0xC605: "CADman", 0xC606: "SpaceMouse Classic", 0xC621: "SpaceBall 5000",
    0xC623: "SpaceTraveler", 0xC625: "SpacePilot", 0xC626: "SpaceNavigator", 0xC627: "SpaceExplorer",
    0xC628: "SpaceNavigator for Notebooks", 0xC629: "SpacePilot Pro", 0xC62B: "SpaceMouse Pro",
}
UDEV_HINT = ("Allow non-root access with a udev rule: echo 'KERNEL==\"hidraw*\", ATTRS{idVendor}==\"256f\", "
             "MODE=\"0666\"' | sudo tee /etc/udev/rules.d/99-spacemouse.rules (idVendor 046d for older models), "
             "then sudo udevadm control --reload-rules && sudo udevadm trigger, and replug the device.")
INT16X3 = struct.Struct("<3h")
# robot component <- (device axis index into [tx, ty, tz, rx, ry, rz], sign)
FRONT = ((1, 1.0), (0, 1.0), (2, -1.0), (4, 1.0), (3, 1.0), (5, -1.0))
BEHIND = ((1, -1.0), (0, -1.0), (2, -1.0), (4, -1.0), (3, -1.0), (5, -1.0))


def _is_spacemouse(vendor: int, product: int) -> bool:
    return vendor == VENDOR_3DCONNEXION or (vendor == VENDOR_LOGITECH and product in LOGITECH_PRODUCTS)


def find_spacemouse(sysfs: str = "/sys", dev: str = "/dev") -> tuple[str, str]:
    """(node path, product name) of the first 3Dconnexion hidraw node; DeviceError saying where it looked."""
    pattern = os.path.join(sysfs, "class", "hidraw", "*", "device", "uevent")
    found, seen = [], []
    for uevent in sorted(glob.glob(pattern)):
        node = uevent.split(os.sep)[-3]
        try:
            with open(uevent) as f:
                fields = dict(line.strip().split("=", 1) for line in f if "=" in line)
            _, vendor, product = (int(x, 16) for x in fields["HID_ID"].split(":"))
        except (OSError, KeyError, ValueError):
            continue  # not a HID device we can identify
        name = fields.get("HID_NAME", "")
        seen.append(f"{node} {vendor:04x}:{product:04x} {name}".strip())
        if _is_spacemouse(vendor, product):
            found.append((os.path.join(dev, node), name or LOGITECH_PRODUCTS.get(product, "3Dconnexion device")))
    if not found:
        what = f"{len(seen)} HID node(s): {'; '.join(seen)}" if seen else "no hidraw nodes"
        raise DeviceError(f"spacemouse: no 3Dconnexion device found; scanned {pattern} ({what}; looking for vendor "
                          f"256f, or 046d with a SpaceMouse product id). Plug it in, or pass path=/dev/hidrawN "
                          f"(--device-path).")
    if len(found) > 1:
        log.info("spacemouse: several 3Dconnexion nodes %s; using %s", [p for p, _ in found], found[0][0])
    return found[0]


class SpaceMouseDevice(StreamDevice):
    """A 3Dconnexion SpaceMouse -> TeleopCommand. `path`: its hidraw node (default: discovered under `sysfs`)."""

    name = "spacemouse"
    HELP = ("spacemouse: move/turn the cap to move/turn the gripper | left button toggles the gripper | right "
            "button takeover | save/discard from the keyboard")

    def __init__(self, path: str | None = None, *, sysfs: str = "/sys", dev: str = "/dev", dead_zone: float = 0.05,
                 full_scale: float = 350.0, operator_side: str = "front") -> None:
        if not 0.0 <= dead_zone < 1.0:
            raise DeviceError(f"spacemouse: dead_zone must be in [0, 1), got {dead_zone}")
        if full_scale <= 0:
            raise DeviceError(f"spacemouse: full_scale must be > 0, got {full_scale}")
        if operator_side not in ("front", "behind"):
            raise DeviceError(f"spacemouse: operator_side must be 'front' or 'behind', got {operator_side!r}")
        self.product = "3Dconnexion device"
        if path is None:
            path, self.product = find_spacemouse(sysfs, dev)
        self.path, self.dead_zone, self.full_scale = path, float(dead_zone), float(full_scale)
        self.mapping = FRONT if operator_side == "front" else BEHIND
        self.reports = 0  # HID reports parsed (diagnostics)
        self._raw = np.zeros(6)  # tx ty tz rx ry rz, counts
        self._buttons = 0
        self._gripper = 0.0
        self._gripper_changed = False
        self._bad: set[tuple[int, int]] = set()
        fd = open_node(path, "spacemouse", UDEV_HINT)
        self._start(fd, owns_fd=True, chunk=64)

    # -- reader thread -----------------------------------------------------------------------------------
    def _on_data(self, report: bytes) -> None:  # hidraw: one report per read
        rid, n = report[0], len(report)
        with self.lock:
            if rid == 1 and n >= 13:
                self._raw[:3], self._raw[3:] = INT16X3.unpack_from(report, 1), INT16X3.unpack_from(report, 7)
            elif rid == 1 and n >= 7:
                self._raw[:3] = INT16X3.unpack_from(report, 1)
            elif rid == 2 and n >= 7:
                self._raw[3:] = INT16X3.unpack_from(report, 1)
            elif rid == 3 and n >= 2:
                buttons = int.from_bytes(report[1:], "little")
                pressed = buttons & ~self._buttons
                self._buttons = buttons
                if pressed & 0b01:
                    self._gripper = 1.0 - self._gripper
                    self._gripper_changed = True
                if pressed & 0b10:
                    self._emit("takeover")
            else:
                if rid in (1, 2, 3) and (rid, n) not in self._bad:  # other ids (LED, battery) are not ours
                    self._bad.add((rid, n))
                    log.warning("spacemouse %s: ignoring a %d-byte report with id %d", self.path, n, rid)
                return
            self.reports += 1

    # -- TeleopDevice ------------------------------------------------------------------------------------
    def read(self) -> TeleopCommand:
        self._check()
        with self.lock:
            raw = self._raw.copy()
            changed, self._gripper_changed = self._gripper_changed, False
            gripper, events = self._gripper, self._take_events()
        device = raw / self.full_scale
        twist = dead_zone(np.array([sign * device[i] for i, sign in self.mapping]), self.dead_zone)
        return TeleopCommand(twist=twist, gripper=gripper, active=bool(np.any(twist)) or changed, events=events)
