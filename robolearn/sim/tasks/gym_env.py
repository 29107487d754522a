"""Any Gymnasium environment as a batched robolearn task: `robolearn train gym:HalfCheetah-v5`.

`GymTask` runs `num_envs` copies as one Gymnasium vector env (same-step auto-reset: a finished env's returned
observation is the first of its next episode, as robolearn tasks do) and gives the Runner, PPO and evaluation the
Task interface: `reset()`, `step(actions) -> (obs, reward, cost, terminated, truncated, info)` with torch tensors,
`episode_stats()`, `check()`, `close()`. Both observation groups are the env's observation (a symmetric critic).

What a CleanRL or Stable-Baselines3 user expects, as options (`task_overrides` of the training config):
- `normalize_reward`: rewards divided by the running standard deviation of the discounted return and clipped to
  +- `reward_clip` (gymnasium's NormalizeReward, SB3's VecNormalize); the raw per-episode return is what is logged
  (`episode/raw_return`) and evaluated (evaluation turns the normalization off);
- `clip_actions`: actions clipped to the action space's bounds;
- observation normalization is the policy's own running normalizer (robolearn's networks carry it);
- the learning-rate schedule is PPO's (`ppo.schedule: linear` anneals it to 0, as CleanRL);
- a cost signal: an env that reports `info["cost"]` (Safety-Gymnasium) gets it back as the task's cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from robolearn.errors import ConfigError

__all__ = ["GymTaskCfg", "GymTask", "GYM_PREFIX"]

GYM_PREFIX = "gym:"
INSTALL_HINT = "pip install 'robolearn[gym]' (Gymnasium with its MuJoCo environments)"


@dataclass(kw_only=True)
class GymTaskCfg:
    env_id: str
    normalize_reward: bool = True  # divide by the running std of the discounted return (then clip)
    reward_clip: float = 10.0
    gamma: float = 0.99  # discount of the return the reward normalization tracks
    clip_actions: bool = True  # clip actions to the action space's bounds
    vectorization: str = "sync"  # sync (one process) | async (a process per env)
    make_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make_vec

    def __post_init__(self) -> None:
        if self.vectorization not in ("sync", "async"):
            raise ConfigError(f"vectorization must be sync or async, got {self.vectorization!r}")
        if self.reward_clip <= 0 or not 0 < self.gamma <= 1:
            raise ConfigError(f"reward_clip must be > 0 and gamma in (0, 1], got {self.reward_clip}, {self.gamma}")


class _RunningStd:
    """Running variance of a scalar (parallel Welford), float64 on the host."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: np.ndarray) -> None:
        n, mean, var = len(x), float(x.mean()), float(x.var())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total


class GymTask:
    """A Gymnasium env id as a robolearn task (see the module doc). Runs on the CPU: Gymnasium steps on the host."""

    backend = "gymnasium"
    skip_empty_masks = True

    def __init__(self, cfg: GymTaskCfg, num_envs: int, *, backend: str = "gymnasium", device: str = "cpu",
                 seed: int = 0, name: str = "") -> None:
        try:
            import gymnasium as gym
        except ImportError:
            raise ConfigError(f"task {name or cfg.env_id} needs Gymnasium: {INSTALL_HINT}") from None
        if torch.device(device).type != "cpu":
            raise ConfigError(f"task {name}: Gymnasium environments step on the host; use --device cpu")
        if backend not in ("gymnasium", "mujoco"):  # the training config's default backend is mujoco
            raise ConfigError(f"task {name}: a Gymnasium env has its own simulator; --backend {backend} does not "
                              "apply")
        self.cfg, self.name, self.num_envs = cfg, name or f"{GYM_PREFIX}{cfg.env_id}", num_envs
        self.device = torch.device("cpu")
        mode = gym.VectorizeMode.SYNC if cfg.vectorization == "sync" else gym.VectorizeMode.ASYNC
        try:
            self.env = gym.make_vec(cfg.env_id, num_envs=num_envs, vectorization_mode=mode,
                                    vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                                    **cfg.make_kwargs)
        except gym.error.Error as exc:
            raise ConfigError(f"task {self.name}: {exc}") from None
        obs_space, act_space = self.env.single_observation_space, self.env.single_action_space
        if not isinstance(act_space, gym.spaces.Box) or not isinstance(obs_space, gym.spaces.Box) \
                or len(obs_space.shape) != 1:
            self.env.close()
            raise ConfigError(f"task {self.name}: needs a flat Box observation and a Box action space (continuous "
                              f"control); got {obs_space} and {act_space}")
        self.num_actions = int(np.prod(act_space.shape))
        self._low, self._high = act_space.low.astype(np.float32), act_space.high.astype(np.float32)
        spec = gym.spec(cfg.env_id)
        self.max_episode_steps = int(cfg.make_kwargs.get("max_episode_steps") or spec.max_episode_steps or 1000)
        try:  # seconds per step, for episode lengths in seconds like robolearn's tasks (else 1: steps)
            self.dt = float(self.env.get_attr("dt")[0])
        except AttributeError:
            self.dt = 1.0
        self.robot = SimpleNamespace(joint_names=[f"action_{i}" for i in range(self.num_actions)])
        self.has_costs = False  # set once the env reports info["cost"]
        self._seed = seed
        self._returns_norm = _RunningStd()
        self._discounted = np.zeros(num_envs)
        self._raw_return = np.zeros(num_envs)
        self._length = np.zeros(num_envs, dtype=np.int64)
        self._stats: dict[str, float] = {}
        self._obs = self._to_obs(self.env.reset(seed=seed)[0])

    # -- the Task interface --------------------------------------------------------------------------------
    @property
    def obs_dims(self) -> dict[str, int]:
        return {k: v.shape[1] for k, v in self._obs.items()}

    def _to_obs(self, obs: np.ndarray) -> dict[str, torch.Tensor]:
        t = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1))
        return {"policy": t, "privileged": t}

    def reset(self) -> dict[str, torch.Tensor]:
        self._discounted[:] = 0.0
        self._raw_return[:] = 0.0
        self._length[:] = 0
        self._obs = self._to_obs(self.env.reset(seed=self._seed)[0])
        return self._obs

    def step(self, actions: torch.Tensor):
        a = actions.detach().to("cpu", torch.float32).numpy().reshape(self.num_envs, -1)
        if not np.isfinite(a).all():
            raise FloatingPointError("policy produced non-finite actions")
        if self.cfg.clip_actions:
            a = np.clip(a, self._low, self._high)
        obs, reward, terminated, truncated, info = self.env.step(a)
        reward = np.asarray(reward, dtype=np.float64)
        done = np.logical_or(terminated, truncated)
        self._raw_return += reward
        self._length += 1
        cost = np.asarray(info.get("cost", np.zeros(self.num_envs)), dtype=np.float64)
        final = info.get("final_info", {})
        if "cost" in final:  # same-step autoreset: an ended env's info is its reset's; its last step's is here
            ended_with_cost = np.asarray(final.get("_cost", done)) & done
            cost = np.where(ended_with_cost, np.asarray(final["cost"], dtype=np.float64), cost)
        self.has_costs = self.has_costs or "cost" in info or "cost" in final
        ended = {"mask": torch.as_tensor(done), "terminated": torch.as_tensor(np.asarray(terminated)),
                 "length_s": torch.as_tensor(self._length * self.dt, dtype=torch.float32),
                 "raw_return": torch.as_tensor(self._raw_return, dtype=torch.float32)}
        if done.any():
            self._add_stats(done, np.asarray(terminated))
            self._raw_return[done] = 0.0
            self._length[done] = 0
        if self.cfg.normalize_reward:
            self._discounted = self._discounted * self.cfg.gamma + reward
            self._returns_norm.update(self._discounted)
            reward = np.clip(reward / np.sqrt(self._returns_norm.var + 1e-8), -self.cfg.reward_clip,
                             self.cfg.reward_clip)
            self._discounted[done] = 0.0
        self._obs = self._to_obs(obs)
        terminated_t, truncated_t = torch.as_tensor(np.asarray(terminated)), torch.as_tensor(np.asarray(truncated))
        cost_t = torch.as_tensor(cost, dtype=torch.float32)
        info_out = {"time_outs": truncated_t & ~terminated_t, "metrics": {}, "ended": ended,
                    "costs": {"cost": cost_t} if self.has_costs else {}}
        return self._obs, torch.as_tensor(reward, dtype=torch.float32), cost_t, terminated_t, truncated_t, info_out

    def _add_stats(self, done: np.ndarray, terminated: np.ndarray) -> None:
        s = self._stats
        s["episodes"] = s.get("episodes", 0.0) + float(done.sum())
        s["raw_return"] = s.get("raw_return", 0.0) + float(self._raw_return[done].sum())
        s["episode_length_s"] = s.get("episode_length_s", 0.0) + float((self._length[done] * self.dt).sum())
        s["survival"] = s.get("survival", 0.0) + float((~terminated[done]).sum())

    def episode_stats(self) -> dict[str, float]:
        """Means over the episodes that ended since the last call: raw return (before normalization), length,
        survival (not terminated), and `episodes`."""
        stats, self._stats = self._stats, {}
        count = stats.pop("episodes", 0.0)
        return {"episodes": count, **{k: v / count for k, v in stats.items()}} if count else {}

    def state_dict(self) -> dict[str, Any]:
        """The reward normalization's running statistics (a resume goes on with the same reward scale)."""
        r = self._returns_norm
        return {"return_mean": r.mean, "return_var": r.var, "return_count": r.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "return_var" in state:
            r = self._returns_norm
            r.mean, r.var, r.count = state["return_mean"], state["return_var"], state["return_count"]

    def check(self) -> None:
        """Nothing is deferred: non-finite actions raise in `step` (Gymnasium steps on the host anyway)."""

    def close(self) -> None:
        self.env.close()
