"""Scripted experts: hand-written controllers that solve a task from its true state, batched over envs.

They generate demonstrations without a human (`robolearn record --expert`), stand in for a policy in the
intervention tests, and act on the same end-effector action space as a teleoperator: `[dx, dy, dz, grip]`.
An expert with phases (the lift expert) keeps one per env and starts over when its env starts a new episode
(`task.episode_step == 0`); the push expert acts on the current state alone.
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

    def _move(self, target: torch.Tensor, grip: torch.Tensor) -> torch.Tensor:
        """Actions that move the commanded end effector toward `target` [N, 3] at up to full speed."""
        delta = (target - self.task.ee_target) / self.task.cfg.max_ee_step
        return torch.cat([delta.clamp(-1.0, 1.0), grip.unsqueeze(1)], dim=1)

    def act(self) -> torch.Tensor:
        raise NotImplementedError


class PushExpert(ScriptedExpert):
    """Push the block along the block-goal line with the closed gripper, as a function of the current state alone
    (no phases), so that an imitating policy sees one action per state:
    - low beside or ahead of the block (not lined up behind it): lift straight up;
    - otherwise head for the point behind the block (away from the goal), descending as it gets close (a funnel:
      high while far, at push height over the point);
    - low and lined up behind the block: push it toward the goal; a block that slips off the line makes the
      gripper lift and approach again.
    It stops once the block is within `stop_fraction` of the task's success distance (a margin for a policy that
    stops a little early; on its own it did not change the phased expert's policy: 77% either way).

    The earlier expert switched phases (approach, descend, push, lift) on thresholds, and a diffusion policy
    trained on its demos stalled at those switches: in 31 of its 46 failures over 200 episodes the block came
    within 3-6 cm of the goal while the gripper hovered above the point behind the block or beside it
    (`benchmarks/push_failures.py`)."""

    z_high, z_push = 0.1, 0.02
    stop_fraction = 0.5
    clearance = 0.015  # m above the block's top (2 * block_size): higher, the gripper passes over the block
    gap = 0.035  # m from the block's face to the point behind it
    funnel = (0.005, 0.02)  # m from the point behind the block: at push height within the first, high beyond
    lined_up = 0.02  # m: the largest sideways offset from the block-goal line that still pushes

    def act(self) -> torch.Tensor:
        t: PushTask = self.task  # type: ignore[assignment]
        s = t.cfg.block_size
        block, ee = t.block_pos[:, :2], t.ee_pos
        to_goal = t.goal[:, :2] - block
        u = to_goal / to_goal.norm(dim=1, keepdim=True).clamp(min=1e-6)
        behind = block - u * (s + self.gap)
        rel = ee[:, :2] - block
        along = (rel * u).sum(dim=1)
        lateral = (rel[:, 0] * u[:, 1] - rel[:, 1] * u[:, 0]).abs()
        low = ee[:, 2] < 2 * s + self.clearance
        behind_line = (lateral < self.lined_up) & (along < -s)
        # approach: the funnel over the point behind the block
        near, far = self.funnel
        frac = (((ee[:, :2] - behind).norm(dim=1) - near) / (far - near)).clamp(0.0, 1.0)
        target = torch.cat([behind, (self.z_push + (self.z_high - self.z_push) * frac).unsqueeze(1)], dim=1)
        push = low & behind_line
        target[push, :2] = (block - u * (s + 0.01) + u * 0.03)[push]
        target[push, 2] = self.z_push
        lift = low & ~behind_line
        target[lift, :2] = ee[lift, :2]
        target[lift, 2] = self.z_high
        action = self._move(target, torch.ones(t.num_envs))
        action[t.goal_distance() < self.stop_fraction * t.cfg.success_distance, :3] = 0.0
        return action


class LiftExpert(ScriptedExpert):
    """Open above the block, descend around it, close for 0.5 s, lift above the goal height; retry on a drop."""

    z_above, close_steps = 0.12, 15

    def __init__(self, task: ManipulationTask) -> None:
        super().__init__(task)
        self.phase = torch.zeros(task.num_envs, dtype=torch.long)
        self.timer = torch.zeros(task.num_envs, dtype=torch.long)

    def act(self) -> torch.Tensor:
        t: LiftTask = self.task  # type: ignore[assignment]
        fresh = t.episode_step == 0  # a new episode starts over from the first phase
        self.phase[fresh] = 0
        self.timer[fresh] = 0
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
