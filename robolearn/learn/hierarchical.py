"""Two levels over one task: a high level that sets velocity commands every `period` control steps, a frozen
low-level velocity skill (a trained locomotion policy) that turns the command into joint targets at the control
rate.

`HighLevelTask` is what the Runner trains the high level on: one of its steps is one high-level decision. It holds
the command for `period` low-level steps; the high level's reward and cost are the sums over those steps. Where an
env's episode ends inside the period (a fall, a time-out), that env's high-level transition ends there: its sums
stop at the ending step and its `terminated`/`truncated` flags are set. Its next episode has already begun (the task
auto-resets); for the rest of the period it stands under a zero command, and the high level decides for it at the
next period boundary, from that step's observation. So the high level acts exactly at period boundaries, every env
of a batch together, and no transition mixes two episodes.

The task must take its commands from outside (`command_source: external`, `set_commands`) and provide two
observation groups besides the high level's own: the skill's (`skill_group`, exactly the observation the skill was
trained on) and the high level's (`policy` and `privileged`, as for any PPO task).

`load_skill` freezes a low-level policy: a training run folder (its latest checkpoint, torch) or a bundle folder
with `policy.onnx` (onnxruntime).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robolearn.errors import ConfigError

__all__ = ["HighLevelTask", "load_skill", "Skill", "make_policy_task"]

Skill = Callable[[torch.Tensor], torch.Tensor]


def load_skill(path: str | Path) -> tuple[Skill, int]:
    """(frozen deterministic low-level policy: obs [N, D] -> actions [N, A], its observation size D) from a run
    folder (checkpoints/) or a bundle folder (policy.onnx)."""
    path = Path(path)
    if (path / "policy.onnx").is_file():
        import onnxruntime as ort

        session = ort.InferenceSession(str(path / "policy.onnx"), providers=["CPUExecutionProvider"])
        (inp,), (out,) = session.get_inputs(), session.get_outputs()
        dim = inp.shape[-1]
        if not isinstance(dim, int):
            raise ConfigError(f"{path / 'policy.onnx'}: input {inp.name!r} has no fixed observation size ({dim!r})")

        def run_onnx(obs: torch.Tensor) -> torch.Tensor:
            x = np.ascontiguousarray(obs.detach().cpu().numpy(), dtype=np.float32)
            return torch.from_numpy(session.run([out.name], {inp.name: x})[0]).to(obs.device)

        return run_onnx, dim
    if (path / "checkpoints").is_dir() or path.is_file():
        from robolearn.learn.checkpoint import load_policy

        _, policy, ckpt = load_policy(path)
        if ckpt["obs_dims"].keys() != {"policy", "privileged"} or not hasattr(policy, "act_mean") or \
                hasattr(policy, "act_with_latent"):
            raise ConfigError(f"skill {path}: expected a PPO run whose actor reads the policy group only")
        policy.eval().requires_grad_(False)
        actor = policy.act_mean

        def run_torch(obs: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return actor(obs.cpu()).to(obs.device)

        return run_torch, int(ckpt["obs_dims"]["policy"])
    raise ConfigError(f"skill {path}: expected a run folder (with checkpoints/) or a bundle folder (with "
                      f"policy.onnx)")


class HighLevelTask:
    """`task` driven by a high level through the frozen `skill`: actions in [-1, 1]^3 map linearly onto the command
    ranges `command_low`..`command_high` (vx, vy, yaw rate), held for `period` low-level steps. Exposes what the
    Runner reads of a task (reset, step, num_envs, num_actions, obs_dims, device, check, close, episode_stats,
    state_dict); `decisions` counts the high-level steps taken; `on_low_step` (e.g. a video recorder) sees the task
    after every low-level step."""

    def __init__(self, task: Any, skill: Skill, *, period: int, command_low: tuple[float, float, float],
                 command_high: tuple[float, float, float], skill_group: str = "skill",
                 skill_dim: int | None = None) -> None:
        if period < 1:
            raise ConfigError(f"hierarchy.period must be >= 1 low-level step, got {period}")
        if getattr(task.cfg, "command_source", None) != "external":
            raise ConfigError(f"task {task.name}: a high level sets its commands: it needs command_source: external")
        obs = task.observations()
        for group in (skill_group, "policy", "privileged"):
            if group not in obs:
                raise ConfigError(f"task {task.name}: the hierarchy needs observation group {group!r}; groups: "
                                  f"{', '.join(obs)}")
        if skill_dim is not None and obs[skill_group].shape[1] != skill_dim:
            raise ConfigError(f"task {task.name}: observation group {skill_group!r} has {obs[skill_group].shape[1]} "
                              f"values but the skill takes {skill_dim}")
        self.task, self.skill, self.period, self.skill_group = task, skill, period, skill_group
        self.name, self.num_envs, self.device, self.backend = task.name, task.num_envs, task.device, task.backend
        self.robot, self.dt = task.robot, task.dt * period
        self.max_episode_steps = -(-task.max_episode_steps // period) + 1  # a reset may park an env one period
        self.num_actions = 3
        self._low = torch.tensor(command_low, dtype=torch.float32, device=self.device)
        self._high = torch.tensor(command_high, dtype=torch.float32, device=self.device)
        self._obs = obs
        self.decisions = 0
        self.on_low_step: Callable[[Any], None] | None = None  # called with the task after every low-level step

    @property
    def obs_dims(self) -> dict[str, int]:
        return {"policy": self._obs["policy"].shape[1], "privileged": self._obs["privileged"].shape[1]}

    def _high_obs(self) -> dict[str, torch.Tensor]:
        return {"policy": self._obs["policy"], "privileged": self._obs["privileged"]}

    def command(self, actions: torch.Tensor) -> torch.Tensor:
        """[N, 3] velocity commands of high-level actions (clipped to [-1, 1], then onto the command ranges)."""
        a = actions.to(self.device, torch.float32).clamp(-1.0, 1.0)
        return self._low + (a + 1.0) / 2.0 * (self._high - self._low)

    def reset(self) -> dict[str, torch.Tensor]:
        self._obs = self.task.reset()
        return self._high_obs()

    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor,
                                                   torch.Tensor, torch.Tensor, dict[str, Any]]:
        """One high-level step: `period` low-level steps under the command of `actions` [N, 3]. Returns the
        task's step tuple with the reward and cost summed over the period (per env, up to its episode's end), the
        flags of episodes that ended in it and `info["time_outs"]` = truncated and not failed."""
        command = self.command(actions)
        n, dev = self.num_envs, self.device
        reward = torch.zeros(n, device=dev)
        cost = torch.zeros(n, device=dev)
        terminated = torch.zeros(n, dtype=torch.bool, device=dev)
        truncated = torch.zeros(n, dtype=torch.bool, device=dev)
        alive = torch.ones(n, dtype=torch.bool, device=dev)  # still in the episode the decision was made in
        info: dict[str, Any] = {}
        ended: dict[str, torch.Tensor] = {}  # the fields of the episodes that end in the period, at their end
        metric_sums: dict[str, torch.Tensor] = {}
        for _ in range(self.period):
            self.task.set_commands(torch.where(alive.unsqueeze(1), command, 0.0))
            low_actions = self.skill(self._obs[self.skill_group])
            self._obs, r, c, term, trunc, info = self.task.step(low_actions)
            if self.on_low_step is not None:
                self.on_low_step(self.task)
            reward += r * alive
            cost += c * alive
            now = alive & info["ended"]["mask"]
            terminated |= now & term
            truncated |= now & ~term
            for key, value in info["ended"].items():
                ended[key] = torch.where(now, value, ended.get(key, torch.zeros_like(value)))
            for key, value in info["metrics"].items():  # means over the period (NaN where a step left it out)
                metric_sums[key] = metric_sums.get(key, 0.0) + value / self.period
            alive &= ~now
        self.decisions += 1
        ended["mask"] = terminated | truncated
        info = {**info, "time_outs": truncated & ~terminated, "ended": ended, "metrics": metric_sums}
        return self._high_obs(), reward, cost, terminated, truncated, info

    @property
    def has_costs(self) -> bool:
        return self.task.has_costs

    def episode_stats(self) -> dict[str, float]:
        return self.task.episode_stats()

    def check(self) -> None:
        self.task.check()

    def state_dict(self) -> dict[str, Any]:
        return self.task.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task.load_state_dict(state)

    def close(self) -> None:
        self.task.close()


def make_policy_task(cfg: Any, num_envs: int, *, backend: str, device: str, seed: int,
                     overrides: dict[str, Any] | None = None) -> Any:
    """The environment a training config's policy acts in: its task, or, with `hierarchy.skill`, the task driven
    through the frozen skill (`HighLevelTask`). Training, its closing evaluation and `robolearn eval` build it here."""
    from robolearn.sim.tasks import make_task

    task = make_task(cfg.task, num_envs, backend=backend, device=device, seed=seed, overrides=overrides)
    h = cfg.hierarchy
    if not h.skill:
        return task
    from robolearn.config import declarations_root

    path = Path(h.skill)
    if not path.is_absolute() and not path.exists():  # e.g. policies/bundles/go2-flat, shipped with robolearn
        path = declarations_root() / path
    try:
        skill, dim = load_skill(path)
        return HighLevelTask(task, skill, period=h.period, command_low=h.command_low, command_high=h.command_high,
                             skill_group=h.skill_group, skill_dim=dim)
    except BaseException:
        task.close()
        raise
