"""Teleoperation: input devices (keyboard, gamepad, SpaceMouse, leader arm), arm following, recording, replay."""

from robolearn.teleop.devices import DEVICES, EVENTS, TeleopCommand, TeleopDevice, make_device

__all__ = ["DEVICES", "EVENTS", "TeleopCommand", "TeleopDevice", "make_device"]
