"""Scripted experts: hand-written controllers that solve a task from its true state, batched over envs.

They generate demonstrations without a human (`robolearn record --expert`), stand in for a policy in the
intervention tests, and act on the same end-effector action space as a teleoperator: `[dx, dy, dz, grip]`.
Each keeps a phase per env and starts over when its env starts a new episode (`task.episode_step == 0`).
"""

from __future__ import annotations

import torch

from robolearn.errors import ConfigError
from robolearn.sim.tasks import Task
from robolearn.sim.tasks.manipulation import LiftTask, ManipulationTask, PushTask

__all__ = ["ScriptedExpert", "PushExpert", "LiftExpert", "make_expert"]


class ScriptedExpert:
    """`act() -> [N, 4]` actions for the task's current state."""

    def __init__(self, task: ManipulationTask) -> None:
        self.task = task
        self.phase = torch.zeros(task.num_envs, dtype=torch.long)
        self.timer = torch.zeros(task.num_envs, dtype=torch.long)

    def _move(self, target: torch.Tensor, grip: torch.Tensor) -> torch.Tensor:
        """Actions that move the commanded end effector toward `target` [N, 3] at up to full speed."""
        delta = (target - self.task.ee_target) / self.task.cfg.max_ee_step
        return torch.cat([delta.clamp(-1.0, 1.0), grip.unsqueeze(1)], dim=1)

    def act(self) -> torch.Tensor:
        fresh = self.task.episode_step == 0
        self.phase[fresh] = 0
        self.timer[fresh] = 0
        return self._act()

    def _act(self) -> torch.Tensor:
        raise NotImplementedError


class PushExpert(ScriptedExpert):
    """Approach the block from the side away from the goal (above it), lower the closed gripper behind it, push it
    along the block-goal line; if the block slips off the line, lift and approach again."""

    z_high, z_push = 0.1, 0.02

    def _act(self) -> torch.Tensor:
        t: PushTask = self.task  # type: ignore[assignment]
        s = t.cfg.block_size
        block, ee = t.block_pos[:, :2], t.ee_pos
        to_goal = t.goal[:, :2] - block
        u = to_goal / to_goal.norm(dim=1, keepdim=True).clamp(min=1e-6)
        behind = block - u * (s + 0.025)
        rel = ee[:, :2] - block
        along = (rel * u).sum(dim=1)
        lateral = (rel[:, 0] * u[:, 1] - rel[:, 1] * u[:, 0]).abs()
        ph = self.phase
        # Phase changes from the measured end effector.
        ph[(ph == 0) & ((ee[:, :2] - behind).norm(dim=1) < 0.012)] = 1
        ph[(ph == 1) & (ee[:, 2] < self.z_push + 0.01)] = 2
        off_line = (ph == 2) & ((lateral > 0.025) | (along > -s))
        ph[off_line] = 3
        ph[(ph == 3) & (ee[:, 2] > self.z_high - 0.01)] = 0
        target = torch.zeros_like(ee)
        target[:, 2] = self.z_high
        target[:, :2] = torch.where((ph <= 1).unsqueeze(1), behind, ee[:, :2])
        target[ph == 1, 2] = self.z_push
        pushing = ph == 2
        target[pushing, :2] = (block - u * (s + 0.01) + u * 0.03)[pushing]
        target[pushing, 2] = self.z_push
        action = self._move(target, torch.ones(t.num_envs))
        action[t.success(), :3] = 0.0
        return action


class LiftExpert(ScriptedExpert):
    """Open above the block, descend around it, close for 0.5 s, lift above the goal height; retry on a drop."""

    z_above, close_steps = 0.12, 15

    def _act(self) -> torch.Tensor:
        t: LiftTask = self.task  # type: ignore[assignment]
        block, ee = t.block_pos, t.ee_pos
        ph, timer = self.phase, self.timer
        ph[(ph == 0) & ((ee[:, :2] - block[:, :2]).norm(dim=1) < 0.008) & (ee[:, 2] > block[:, 2] + 0.05)] = 1
        ph[(ph == 1) & (ee[:, 2] < block[:, 2] + 0.008)] = 2
        timer[ph != 2] = 0
        timer[ph == 2] += 1
        ph[(ph == 2) & (timer > self.close_steps)] = 3
        dropped = (ph == 3) & (ee[:, 2] - block[:, 2] > 0.04)
        ph[dropped] = 0
        target = torch.zeros_like(ee)
        target[:, :2] = block[:, :2]
        target[:, 2] = self.z_above
        target[ph == 1, 2] = block[ph == 1, 2]
        hold = ph == 2
        target[hold] = t.ee_target[hold]
        lifting = ph == 3
        target[lifting, :2] = t.ee_target[lifting, :2]
        target[lifting, 2] = t.goal[lifting, 2] + 0.03
        grip = torch.where(ph >= 2, 1.0, -1.0)
        return self._move(target, grip)


EXPERTS: dict[type[Task], type[ScriptedExpert]] = {PushTask: PushExpert, LiftTask: LiftExpert}


def make_expert(task: Task) -> ScriptedExpert:
    for cls, expert in EXPERTS.items():
        if isinstance(task, cls):
            return expert(task)  # type: ignore[arg-type]
    raise ConfigError(f"no scripted expert for task {task.name!r}; experts exist for tasks of type "
                      f"{', '.join(c.__name__ for c in EXPERTS)}")
