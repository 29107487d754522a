"""User-facing errors: the CLI prints their message on one line, never a stack trace."""

from __future__ import annotations

__all__ = ["RobolearnError", "ConfigError", "RobotImportError", "CheckpointError", "BundleError", "DatasetError",
           "DeviceError", "EXTRA_OF_MODULE", "missing_extra"]

# Top-level modules of the optional dependencies -> the extra of pyproject.toml that installs them. The base install
# (numpy, pyyaml, rich, typer) runs the CLI shell; `robolearn[deploy]` adds the deploy runtime (no torch, no MuJoCo).
EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "mujoco", "example_robot_data", "pybullet", "pybullet_data", "tensorboard", "imageio",
                     "imageio_ffmpeg", "matplotlib", "PIL", "onnx", "onnxscript", "pyarrow", "av", "rosbags"), "train"),
    **dict.fromkeys(("onnxruntime", "cyclonedds"), "deploy"),
    **dict.fromkeys(("mujoco_warp", "warp"), "mjwarp"),
    **dict.fromkeys(("jax", "jaxlib", "mujoco.mjx"), "mjx"),
    "gymnasium": "gym",
    "diffusers": "train",
    "cv2": "camera",
    "wandb": "wandb",
}


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


def missing_extra(exc: ImportError) -> str | None:
    """For an ImportError of an optional dependency: one line saying which extra installs it (else None)."""
    name = getattr(exc, "name", None) or ""
    if name not in EXTRA_OF_MODULE:
        name = name.split(".")[0]
    extra = EXTRA_OF_MODULE.get(name)
    if extra is None:
        return None
    # Every extra but deploy pulls torch, and a bare torch requirement resolves to a multi-GB CUDA build.
    torch = "pip install torch==2.13.0 && " if extra != "deploy" else ""
    return (f"{name} is not installed (it comes with the {extra} extra): {torch}pip install 'robolearn[{extra}]' "
            f"(from a checkout: pip install -e '.[{extra}]')")
