"""Training configs (`policies/ppo/<task>.yaml`): network, PPO, runner budget, evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robolearn.config import declarations_root, from_dict, load_yaml, merge
from robolearn.errors import ConfigError
from robolearn.learn.ppo import PPOCfg
from robolearn.learn.ppo_lagrangian import LagrangianCfg
from robolearn.learn.risk_critic import SafetyCriticCfg
from robolearn.sim.backends import check_device
from robolearn.sim.tasks.gym_env import GYM_PREFIX

__all__ = ["ALGORITHMS", "NetworkCfg", "EvalCfg", "TrainCfg", "load_train_cfg"]


@dataclass(kw_only=True)
class NetworkCfg:
    actor_hidden: list[int] = field(default_factory=lambda: [256, 128, 64])
    critic_hidden: list[int] = field(default_factory=lambda: [256, 128, 64])
    activation: str = "elu"
    init_std: float = 1.0
    # Non-empty: a privileged teacher (TeacherActorCritic): an encoder of these hidden sizes maps the privileged
    # extras to `latent_dim`, and the actor reads [policy, latent]. Distil it with `robolearn distill`.
    privileged_encoder: list[int] = field(default_factory=list)
    latent_dim: int = 32

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ConfigError(f"network.latent_dim must be >= 1, got {self.latent_dim}")
        if self.activation not in ("elu", "relu", "tanh"):
            raise ConfigError(f"network.activation must be elu, relu or tanh, got {self.activation!r}")


@dataclass(kw_only=True)
class EvalCfg:
    num_envs: int = 64  # one episode per env
    task_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. forward-only commands
    # Named held-out randomization ranges (task `randomization` fields), for `robolearn eval --randomization`.
    randomization: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_envs < 1:
            raise ConfigError(f"eval.num_envs must be >= 1, got {self.num_envs}")


@dataclass(kw_only=True)
class HierarchyCfg:
    """Train a high level over a frozen velocity skill (robolearn.learn.hierarchical): `skill` is a run folder or
    a bundle folder; the high level's actions in [-1, 1]^3 map onto `command_low`..`command_high` (vx, vy, yaw
    rate) and are held for `period` low-level steps. Empty `skill`: no hierarchy."""

    skill: str = ""
    period: int = 10
    skill_group: str = "skill"  # the task's observation group the skill reads
    command_low: tuple[float, float, float] = (-1.0, -0.5, -1.0)
    command_high: tuple[float, float, float] = (1.0, 0.5, 1.0)

    def __post_init__(self) -> None:
        if self.period < 1:
            raise ConfigError(f"hierarchy.period must be >= 1 low-level step, got {self.period}")
        if any(lo > hi for lo, hi in zip(self.command_low, self.command_high, strict=True)):
            raise ConfigError(f"hierarchy.command_low must be <= command_high, got {list(self.command_low)}, "
                              f"{list(self.command_high)}")


ALGORITHMS = ("ppo", "ppo-lag")  # `--algo`: PPO; PPO-Lagrangian under `lagrangian.cost_limit` (ppo_lagrangian.py)


@dataclass(kw_only=True)
class TrainCfg:
    task: str
    algorithm: str = "ppo"  # one of ALGORITHMS
    backend: str = "mujoco"
    device: str = "cpu"  # cpu | cuda | cuda:N: the task (with a GPU backend), policy, storage and PPO all live there
    num_envs: int = 1024  # per process: with torchrun / --nproc N, each of the N ranks simulates num_envs envs
    steps_per_env: int = 24  # rollout length per iteration
    max_iterations: int = 1000
    max_time_s: float = 0.0  # wall-clock budget for training (0: none); training stops at whichever comes first
    save_interval: int = 100
    seed: int = 0  # rank r seeds its envs and action noise with seed + r
    # torch's CPU threads for this process (0: torch's default, one per core). Small networks train faster on one
    # thread: gym.yaml sets 1 (see there).
    torch_threads: int = 0
    dist_backend: str = "auto"  # multi-process training: auto (nccl on CUDA, gloo on CPU) | gloo | nccl
    task_overrides: dict[str, Any] = field(default_factory=dict)
    network: NetworkCfg = field(default_factory=NetworkCfg)
    ppo: PPOCfg = field(default_factory=PPOCfg)
    lagrangian: LagrangianCfg = field(default_factory=LagrangianCfg)  # read by ppo-lag only
    safety_critic: SafetyCriticCfg = field(default_factory=SafetyCriticCfg)  # Q_risk beside PPO (risk_critic.py)
    eval: EvalCfg = field(default_factory=EvalCfg)
    hierarchy: HierarchyCfg = field(default_factory=HierarchyCfg)

    def eval_task_overrides(self, randomization: str = "train") -> dict[str, Any]:
        """Task overrides for evaluation: the training overrides with the eval section's on top, and the named
        randomization ranges (`train`: the training ranges) on top of those."""
        out = merge(self.task_overrides, self.eval.task_overrides)
        if randomization == "train":
            return out
        if randomization not in self.eval.randomization:
            valid = ", ".join(["train", *self.eval.randomization])
            raise ConfigError(f"unknown randomization {randomization!r} for task {self.task}; valid: {valid} "
                              f"(eval.randomization in the training config)")
        return merge(out, {"randomization": self.eval.randomization[randomization]})

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        for name in ("num_envs", "steps_per_env", "max_iterations", "save_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads must be >= 0 (0: torch's default), got {self.torch_threads}")
        if not self.max_time_s >= 0:
            raise ConfigError(f"max_time_s must be >= 0 (0: no time budget), got {self.max_time_s}")
        check_device(self.backend, self.device)
        if self.dist_backend not in ("auto", "gloo", "nccl"):
            raise ConfigError(f"dist_backend must be auto, gloo or nccl, got {self.dist_backend!r}")
        if (self.num_envs * self.steps_per_env) % self.ppo.minibatches:
            raise ConfigError(
                f"num_envs * steps_per_env ({self.num_envs * self.steps_per_env}) must be divisible by "
                f"ppo.minibatches ({self.ppo.minibatches})"
            )


def load_train_cfg(task: str | None = None, path: str | Path | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainCfg:
    """Training config for `task` (policies/ppo/<task>.yaml) or from the file `path`.

    A config's `gpu` section (settings sized for a GPU: thousands of envs, a GPU backend, a larger network) is
    merged over the file when the device (from `overrides` or the file) is a CUDA device; `overrides` (the
    command line) come last."""
    overrides = overrides or {}
    if path is None:
        gym = task is not None and task.startswith(GYM_PREFIX)
        # any Gymnasium env: one config of CleanRL-like settings for continuous control (policies/ppo/gym.yaml)
        path = declarations_root() / "policies" / "ppo" / ("gym.yaml" if gym else f"{task}.yaml")
        if not path.is_file():
            from robolearn.sim.tasks import task_names

            valid = task_names()
            if task not in valid:
                raise ConfigError(f"unknown task {task!r}; valid tasks: {', '.join(valid)}")
            data: dict[str, Any] = {"task": task}
        else:
            data = load_yaml(path)
    else:
        data = load_yaml(path)
    gpu = data.pop("gpu", None) or {}
    if not isinstance(gpu, dict):
        raise ConfigError(f"{path}: field 'gpu' must be a mapping of settings, got {type(gpu).__name__}")
    if str(overrides.get("device", data.get("device", "cpu"))).startswith("cuda"):
        data = merge(data, gpu)
    data = merge(data, overrides)
    if task is not None and task.startswith(GYM_PREFIX):
        data["task"] = task  # gym.yaml serves every env id
    if task is not None and data.get("task", task) != task:
        raise ConfigError(f"{path}: config is for task {data.get('task')!r}, not {task!r}")
    data.setdefault("task", task)
    return from_dict(TrainCfg, data, where=str(path))
