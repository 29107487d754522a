"""Warm starts: a new PPO run whose actor-critic starts from another run's weights (`robolearn train TASK --init
RUN`), also when the task observes more or fewer terms than the run was trained on.

Observation columns are matched by name (`Task.observation_columns`: `term[i]`, `included/term[i]`). The first layer
of the actor and of the critic keeps the trained weights of every column both tasks have and gets zero weights for a
new one, so the warm-started policy acts exactly as the trained one until training gives the new inputs weight.
The normalizers keep their statistics for matched columns; new columns start at mean 0, variance 1, and the sample
count is capped at `count_cap` so that every column adapts to the new task within a few iterations. Hidden layers,
the action std and the value head must have the same shapes. The optimizer, the learning rate and the iteration
count start fresh: this is a new run, not a resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robolearn.errors import CheckpointError
from robolearn.learn.checkpoint import PPO_FORMATS, load_checkpoint
from robolearn.learn.models.actor_critic import ActorCritic

__all__ = ["warm_start"]

# state-dict keys whose last dimension runs over a group's observation columns, per group
_INPUT_KEYS = {"policy": ("actor_norm.mean", "actor_norm.var", "actor.0.weight"),
               "privileged": ("critic_norm.mean", "critic_norm.var", "critic.0.weight")}


def _old_columns(ckpt: dict[str, Any], file: Path) -> dict[str, list[str]]:
    """The checkpoint's task, built with one env from its own config, named column by column."""
    from robolearn.config import from_dict
    from robolearn.learn.config import TrainCfg
    from robolearn.learn.hierarchical import make_policy_task

    cfg = from_dict(TrainCfg, ckpt["config"], where=f"{file} (checkpoint config)")
    if cfg.hierarchy.skill:
        raise CheckpointError(f"{file}: --init takes a run trained on a task's own actions, not a high level over "
                              f"a skill")
    task = make_policy_task(cfg, 1, backend="mujoco", device="cpu", seed=0, overrides=cfg.task_overrides)
    try:
        task.reset()
        return {group: task.observation_columns(group) for group in _INPUT_KEYS}
    finally:
        task.close()


def warm_start(algorithm: Any, task: Any, path: str | Path, *, count_cap: int) -> dict[str, Any]:
    """Load the actor-critic of the PPO run or checkpoint `path` into `algorithm.policy` for `task`, matching
    observation columns by name (module docstring). Returns what was matched: {group: (kept, new, dropped)
    column counts}, and the file read."""
    ckpt, file = load_checkpoint(path, with_path=True)
    if ckpt["format"] not in PPO_FORMATS:
        raise CheckpointError(f"{file}: --init takes a PPO run (robolearn train); this is a {ckpt['format']} "
                              f"checkpoint")
    if ckpt["num_actions"] != task.num_actions:
        raise CheckpointError(f"{file}: trained for {ckpt['num_actions']} actions; task {task.name} has "
                              f"{task.num_actions}")
    policy = algorithm.policy
    if type(policy) is not ActorCritic or policy.history != 1:
        raise CheckpointError(f"--init: warm starts are for the plain actor-critic (network without "
                              f"privileged_encoder or history); this run's is {type(policy).__name__}")
    old_state: dict[str, torch.Tensor] = ckpt["model"]
    new_state = policy.state_dict()
    old_columns = _old_columns(ckpt, Path(file))
    report: dict[str, Any] = {"file": str(file)}
    mapped: set[str] = set()
    for group, keys in _INPUT_KEYS.items():
        old, new = old_columns[group], task.observation_columns(group)
        if len(old) != ckpt["obs_dims"][group] or len(new) != new_state[keys[0]].numel():
            raise CheckpointError(f"{file}: observation group {group}: the columns of the tasks ({len(old)}, "
                                  f"{len(new)}) do not match the networks' inputs")
        where = {name: i for i, name in enumerate(old)}
        pairs = [(j, where[name]) for j, name in enumerate(new) if name in where]
        dst = torch.tensor([j for j, _ in pairs], dtype=torch.long)
        src = torch.tensor([i for _, i in pairs], dtype=torch.long)
        for key in keys:
            if old_state[key].shape[:-1] != new_state[key].shape[:-1]:
                raise CheckpointError(f"{file}: network parameter {key}: shape {tuple(old_state[key].shape)} in the "
                                      f"checkpoint, {tuple(new_state[key].shape)} here (--init keeps the hidden "
                                      f"layers: use the same network section)")
            value = new_state[key].clone()
            if key.endswith(".weight"):
                value.zero_()
            value[..., dst.to(value.device)] = old_state[key][..., src].to(value.device, value.dtype)
            new_state[key] = value
            mapped.add(key)
        report[group] = (len(pairs), len(new) - len(pairs), len(old) - len(pairs))
    for key, value in new_state.items():
        if key in mapped:
            continue
        if key not in old_state or old_state[key].shape != value.shape:
            shape = tuple(old_state[key].shape) if key in old_state else "none"
            raise CheckpointError(f"{file}: network parameter {key}: shape {shape} in the checkpoint, "
                                  f"{tuple(value.shape)} here (--init keeps the hidden layers: use the same network "
                                  f"section)")
        new_state[key] = old_state[key]
    for norm in ("actor_norm", "critic_norm"):
        new_state[f"{norm}.count"] = torch.clamp(old_state[f"{norm}.count"], max=count_cap)
    policy.load_state_dict(new_state)
    return report
