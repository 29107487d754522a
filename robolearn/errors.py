"""User-facing errors: the CLI prints their message on one line, never a stack trace."""

from __future__ import annotations

__all__ = ["RobolearnError", "ConfigError", "RobotImportError", "CheckpointError", "BundleError", "DatasetError",
           "DeviceError"]


class RobolearnError(Exception):
    """An error whose message is written for the user; it names what was wrong and what was expected."""


class ConfigError(RobolearnError):
    """A configuration file or value is malformed, unknown, or out of range."""


class RobotImportError(RobolearnError):
    """A robot description (URDF, meshes, joints) cannot be turned into a simulation model."""


class CheckpointError(RobolearnError):
    """A checkpoint is missing, unreadable, or belongs to another task or network layout."""


class BundleError(RobolearnError):
    """A policy bundle (policy.onnx + deploy.yaml) is missing, malformed, tampered with, or does not fit the robot."""


class DatasetError(RobolearnError):
    """A dataset folder is missing, foreign (not LeRobot v3), corrupted, or does not match what is being written."""


class DeviceError(RobolearnError):
    """A teleoperation device is missing, unreadable, or sends data that cannot be parsed."""
