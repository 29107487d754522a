"""Tasks: declared in `sim/tasks/<name>.yaml` (task type, robot, settings), implemented by a task type here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robolearn.config import declarations_root, from_dict, load_yaml, merge
from robolearn.errors import ConfigError
from robolearn.sim.backends import check_device
from robolearn.sim.tasks.base import Task, TaskCfg
from robolearn.sim.tasks.gym_env import GYM_PREFIX, GymTask, GymTaskCfg
from robolearn.sim.tasks.locomotion import LocomotionTask
from robolearn.sim.tasks.manipulation import LiftTask, ManipulationTask, PushTask
from robolearn.sim.tasks.navigation import NavigationTask
from robolearn.sim.tasks.reach import ReachTask
from robolearn.sim.tasks.rough import RoughLocomotionTask
from robolearn.sim.tasks.wipe import WipeTask

__all__ = ["Task", "TaskCfg", "ManipulationTask", "TASK_TYPES", "task_names", "load_task_cfg", "make_task"]

TASK_TYPES: dict[str, type[Task]] = {"locomotion": LocomotionTask, "reach": ReachTask, "push": PushTask,
                                     "lift": LiftTask, "rough_locomotion": RoughLocomotionTask,
                                     "navigation": NavigationTask, "wipe": WipeTask}


def _tasks_dir() -> Path:
    return declarations_root() / "sim" / "tasks"


def task_names() -> list[str]:
    return sorted(p.stem for p in _tasks_dir().glob("*.yaml"))


def task_description(name: str) -> str:
    return str(load_yaml(_tasks_dir() / f"{name}.yaml").get("description", ""))


def task_instruction(name: str) -> str:
    """The task's short language instruction (`instruction:` in its YAML; recorded as LeRobot's task), '' if none."""
    return str(load_yaml(_tasks_dir() / f"{name}.yaml").get("instruction", ""))


def load_task_cfg(name: str, overrides: dict[str, Any] | None = None) -> tuple[type[Any], Any]:
    """The task type and its typed config for task `name`, with `overrides` merged over the YAML (or, for
    `gym:<EnvId>`, over the Gymnasium adapter's defaults)."""
    if name.startswith(GYM_PREFIX):
        return GymTask, from_dict(GymTaskCfg, {**(overrides or {}), "env_id": name[len(GYM_PREFIX):]},
                                  where=f"task {name} (task_overrides)")
    path = _tasks_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(task_names())}, or {GYM_PREFIX}<EnvId> "
                          "(any Gymnasium environment)")
    data = merge(load_yaml(path), overrides or {})
    data.pop("description", None)
    data.pop("instruction", None)
    kind = data.pop("type", None)
    if kind not in TASK_TYPES:
        raise ConfigError(f"{path}: field 'type' must be one of {', '.join(TASK_TYPES)}, got {kind!r}")
    cls = TASK_TYPES[kind]
    cfg = from_dict(cls.cfg_cls, data, where=str(path))
    return cls, cfg


def make_task(name: str, num_envs: int, *, backend: str = "mujoco", device: str = "cpu", seed: int = 0,
              overrides: dict[str, Any] | None = None) -> Task:
    """A task by name: one declared in sim/tasks/<name>.yaml, or `gym:<EnvId>` (any Gymnasium env, GymTask)."""
    cls, cfg = load_task_cfg(name, overrides)
    host_only = cls is GymTask or cls.cpu_only  # these refuse a GPU themselves, naming the task
    check_device(None if host_only else backend, device)  # before the task puts anything on it
    return cls(cfg, num_envs, backend=backend, device=device, seed=seed, name=name)
