"""Simulation backends behind one interface; `make_backend` picks one by name."""

from __future__ import annotations

import mujoco

from robolearn.errors import ConfigError
from robolearn.sim.backends.base import Backend
from robolearn.sim.backends.mjwarp_backend import MjWarpBackend
from robolearn.sim.backends.mjx_backend import MjxBackend
from robolearn.sim.backends.mujoco_cpu import MujocoBackend
from robolearn.sim.backends.pybullet_backend import PyBulletBackend

__all__ = ["Backend", "BACKENDS", "CPU_BACKENDS", "check_device", "make_backend"]

BACKENDS: dict[str, tuple[type[Backend], str]] = {
    "mujoco": (MujocoBackend, "MuJoCo on the CPU, envs stepped in C++ threads by mujoco.rollout (default)"),
    "mjwarp": (MjWarpBackend, "MuJoCo Warp: all envs in parallel on a GPU (or, slowly, the CPU); extra [mjwarp]"),
    "mjx": (MjxBackend, "MJX (JAX): one compiled program for all envs on a GPU (or, slowly, the CPU); extra [mjx]"),
    "pybullet": (PyBulletBackend, "PyBullet (Bullet) on the CPU, one client per env: a second engine for sim2sim"),
}

CPU_BACKENDS = ("mujoco", "pybullet")  # engines that only run on the CPU; the others run on GPUs (or, slowly, CPUs)


def check_device(backend: str | None, device: str) -> None:
    """A ConfigError unless `device` is cpu, cuda or cuda:N, and cpu for the CPU-only engines (backend None: the
    device alone is checked)."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if kind == "cuda" and backend in CPU_BACKENDS:
        raise ConfigError(f"backend {backend!r} runs on the CPU; on device {device!r} use a GPU backend "
                          f"(--backend mjwarp or --backend mjx)")


def make_backend(name: str, model: mujoco.MjModel, num_envs: int, device: str = "cpu") -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    return BACKENDS[name][0](model, num_envs, device=device)
