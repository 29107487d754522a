"""On-policy runner: rollouts, PPO updates, TensorBoard, checkpoints, progress, and the run folder.

runs/<name>/
  config.yaml      resolved training config (task overrides included)
  checkpoints/     model_<iteration>.pt and model.pt (latest)
  tb/              TensorBoard scalars
  summary.json     env steps, wall time, steps/s, final mean reward, evaluation metrics

Under torchrun (WORLD_SIZE > 1) every rank runs this loop on its own env batch (see distributed.py); only
rank 0 writes the run folder, TensorBoard, checkpoints, progress and the evaluation.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from robolearn.config import from_dict, to_dict
from robolearn.errors import CheckpointError, ConfigError
from robolearn.policies.distributed import Distributed, init_distributed
from robolearn.policies.episode_log import EpisodeLog
from robolearn.policies.evaluate import evaluate_final
from robolearn.policies.networks import ActorCritic, TeacherActorCritic
from robolearn.policies.ppo import PPO
from robolearn.policies.storage import RolloutStorage
from robolearn.policies.students import load_student
from robolearn.policies.train_cfg import TrainCfg
from robolearn.sim.tasks import Task, make_task

__all__ = ["build_policy", "load_checkpoint", "load_policy", "run_folder", "OnPolicyRunner"]

CHECKPOINT_VERSION = 1
CHECKPOINT_FORMATS = ("robolearn-ppo", "robolearn-student")  # robolearn train; robolearn distill


def build_policy(cfg: TrainCfg, obs_dims: dict[str, int], num_actions: int) -> ActorCritic:
    n = cfg.network
    if n.privileged_encoder:
        if obs_dims["privileged"] <= obs_dims["policy"]:
            raise ConfigError(f"network.privileged_encoder: task {cfg.task} has no privileged extras (privileged "
                              f"{obs_dims['privileged']} <= policy {obs_dims['policy']}) for a teacher to read")
        return TeacherActorCritic(obs_dims["policy"], obs_dims["privileged"], num_actions,
                                  encoder_hidden=n.privileged_encoder, latent_dim=n.latent_dim,
                                  actor_hidden=n.actor_hidden, critic_hidden=n.critic_hidden,
                                  activation=n.activation, init_std=n.init_std)
    return ActorCritic(obs_dims["policy"], obs_dims["privileged"], num_actions, actor_hidden=n.actor_hidden,
                       critic_hidden=n.critic_hidden, activation=n.activation, init_std=n.init_std)


def load_checkpoint(path: str | Path, *, task: str | None = None) -> dict[str, Any]:
    """Read a checkpoint; a missing, unreadable or other-task file raises CheckpointError naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "model.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable robolearn checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in CHECKPOINT_FORMATS:
        raise CheckpointError(f"{path}: not a robolearn checkpoint (PPO run or distilled student)")
    if task is not None and ckpt["task"] != task:
        raise CheckpointError(f"{path}: checkpoint was trained on task {ckpt['task']!r}, not {task!r}")
    return ckpt


def load_policy(run: str | Path, *, task: str | None = None) -> tuple[TrainCfg, nn.Module, dict[str, Any]]:
    """(training config, policy with the checkpoint's weights, the checkpoint) of a run folder or checkpoint.

    For a distilled student the training config is its teacher's (task, overrides, evaluation settings)."""
    ckpt = load_checkpoint(run, task=task)
    if ckpt["format"] == "robolearn-student":
        cfg, student = load_student(ckpt, str(run))
        return cfg, student, ckpt
    cfg = from_dict(TrainCfg, ckpt["config"], where=f"{run} (checkpoint config)")
    policy = build_policy(cfg, ckpt["obs_dims"], ckpt["num_actions"])
    policy.load_state_dict(ckpt["model"])
    return cfg, policy, ckpt


def run_folder(run: str | Path) -> Path:
    """The run folder of `run` (a run folder, or runs/<name>/checkpoints/<file>)."""
    run = Path(run)
    return run if run.is_dir() else run.parent.parent


class OnPolicyRunner:
    """PPO on a task. The task, the policy, the rollout storage and PPO live on `cfg.device` (with a GPU backend
    the whole loop stays on the GPU); a collection step makes no host sync, an iteration a few (its statistics)."""

    def __init__(self, cfg: TrainCfg, run_dir: Path, *, console: Console | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.console = console or Console()
        # One rank of a torchrun launch, or None for a single process (then no collective is ever called).
        self.dist: Distributed | None = init_distributed(cfg.dist_backend, cfg.device)
        self.rank = self.dist.rank if self.dist is not None else 0
        self.world_size = self.dist.world_size if self.dist is not None else 1
        self.device = self.dist.device if self.dist is not None else torch.device(cfg.device)
        try:
            torch.manual_seed(cfg.seed + self.rank)  # each rank explores with its own action noise...
            self.task: Task = make_task(cfg.task, cfg.num_envs, backend=cfg.backend, device=str(self.device),
                                        seed=cfg.seed + self.rank, overrides=cfg.task_overrides)  # ...on its own envs
        except BaseException:
            self.close(wait_for_peers=False)
            raise
        self.obs_dims = self.task.obs_dims
        with self.device:  # parameters are created on the training device
            self.policy = build_policy(cfg, self.obs_dims, self.task.num_actions)
        if self.dist is not None:
            self.dist.broadcast_module(self.policy)  # every rank starts from rank 0's parameters
        # The same minibatch permutations on every rank (see RolloutStorage.minibatches).
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.ppo = PPO(self.policy, cfg.ppo, self.generator, self.dist)
        self.storage = RolloutStorage(cfg.steps_per_env, cfg.num_envs, self.policy.actor_dim,
                                      self.obs_dims["privileged"], self.task.num_actions, device=self.device)
        self.iteration = 0
        self.env_steps = 0
        self.train_time_s = 0.0

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): the one that writes files and prints."""
        return self.rank == 0

    def close(self, *, wait_for_peers: bool = True) -> None:
        """Leave the process group (distributed runs); a no-op for a single process. After an error pass
        wait_for_peers=False (see `Distributed.close`)."""
        if self.dist is not None:
            self.dist.close(wait_for_peers=wait_for_peers)

    # -- checkpoints -------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "format": "robolearn-ppo", "version": CHECKPOINT_VERSION, "task": self.cfg.task,
            "obs_dims": self.obs_dims, "num_actions": self.task.num_actions,
            "joint_names": list(self.task.robot.joint_names), "config": to_dict(self.cfg),
            "model": self.policy.state_dict(), "optimizer": self.ppo.optimizer.state_dict(), "lr": self.ppo.lr,
            "iteration": self.iteration, "env_steps": self.env_steps, "train_time_s": self.train_time_s,
            "rng": self.generator.get_state(),
        }, path)

    def resume(self, path: str | Path) -> None:
        if self.dist is None:
            ckpt = load_checkpoint(path, task=self.cfg.task)
            if ckpt["format"] != "robolearn-ppo":
                raise CheckpointError(f"{path}: a distilled student cannot be resumed by PPO training")
        else:  # rank 0 reads the file (it may exist on its machine only) and sends the checkpoint to every rank
            ckpt, error = None, None
            if self.dist.is_main:
                try:
                    ckpt = load_checkpoint(path, task=self.cfg.task)
                except CheckpointError as exc:
                    error = str(exc)
            ckpt, error = self.dist.broadcast_object((ckpt, error))
            if error is not None:
                raise CheckpointError(error)
        if ckpt["obs_dims"] != self.obs_dims or ckpt["num_actions"] != self.task.num_actions:
            raise CheckpointError(f"{path}: observation/action sizes {ckpt['obs_dims']}, {ckpt['num_actions']} "
                                  f"do not match task {self.cfg.task}: {self.obs_dims}, {self.task.num_actions}")
        try:
            self.policy.load_state_dict(ckpt["model"])
        except RuntimeError:
            raise CheckpointError(f"{path}: network layout differs from the config's network section") from None
        self.ppo.optimizer.load_state_dict(ckpt["optimizer"])  # moved to the parameters' device
        self.ppo.lr = ckpt["lr"]
        self.iteration, self.env_steps = ckpt["iteration"], ckpt["env_steps"]
        self.train_time_s = ckpt.get("train_time_s", 0.0)
        rng = ckpt["rng"]
        if rng.numel() == self.generator.get_state().numel():  # a CPU and a CUDA generator keep different states
            self.generator.set_state(rng)
        else:
            self.generator.manual_seed(self.cfg.seed + 1 + self.iteration)

    # -- training ------------------------------------------------------------------------------------------
    def learn(self, *, progress: bool = True) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        cfg, ranks, main = self.cfg, self.dist, self.is_main
        writer = None
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            writer = SummaryWriter(str(self.run_dir / "tb"))
        obs = self.task.reset()
        log = EpisodeLog(cfg.num_envs, self.device)
        start_iteration, start_time = self.iteration, time.perf_counter()
        budget_left = cfg.max_time_s - self.train_time_s if cfg.max_time_s > 0 else float("inf")
        total = cfg.max_iterations
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[rate]:>8.0f} steps/s"), TextColumn("reward {task.fields[reward]:>7.2f}"),
                   TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}")]
        # A live bar on a terminal; a plain line every `log_every` iterations in logs and CI.
        live = progress and main and self.console.is_terminal
        log_every = max(1, total // 50) if progress and main and not live else 0
        with Progress(*columns, console=self.console, disable=not live, transient=False) as bar:
            job = bar.add_task(f"train {cfg.task}", total=total, completed=self.iteration, rate=0.0, reward=0.0,
                               eta="-")
            while self.iteration < total:
                t0 = time.perf_counter()
                with torch.inference_mode():
                    for _ in range(cfg.steps_per_env):
                        actor_obs, critic_obs = self.policy.actor_input(obs), obs["privileged"]
                        if ranks is None:
                            self.policy.update_normalizers(actor_obs, critic_obs)
                        else:  # merged over ranks: the normalizers stay identical everywhere
                            ranks.update_normalizers(((self.policy.actor_norm, actor_obs),
                                                     (self.policy.critic_norm, critic_obs)))
                        dist = self.policy.distribution(actor_obs)
                        # rsample: mean + std * N(0, 1); `sample` checks std >= 0 on the host (a sync per step)
                        actions = dist.rsample()
                        values = self.policy.value(critic_obs).squeeze(-1)
                        obs, reward, terminated, truncated, info = self.task.step(actions)
                        done = terminated | truncated
                        log.step(reward, done)
                        # Bootstrap time-outs: the episode did not fail, it was cut.
                        reward = reward + cfg.ppo.gamma * values * info["time_outs"]
                        self.storage.add(actor_obs, critic_obs, actions, dist.log_prob(actions).sum(-1), dist.mean,
                                         dist.stddev.expand_as(dist.mean), values, reward, done.float())
                    last_values = self.policy.value(obs["privileged"]).squeeze(-1)
                self.task.check()  # non-finite actions or a backend fault since the last iteration
                collect_s = time.perf_counter() - t0
                self.storage.compute_gae(last_values, cfg.ppo.gamma, cfg.ppo.lam,
                                         mean_std=None if ranks is None else ranks.mean_std)
                stats = self.ppo.update(self.storage)
                log.end_iteration(self.task, None if ranks is None else ranks.sum)
                iter_s = time.perf_counter() - t0
                self.iteration += 1
                steps = cfg.num_envs * cfg.steps_per_env * self.world_size  # all ranks' env steps
                self.env_steps += steps
                self.train_time_s += iter_s
                mean_return = log.mean_return
                stats.update({"perf/steps_per_s": steps / iter_s, "perf/collect_s": collect_s,
                              "perf/update_s": iter_s - collect_s, "train/mean_return": mean_return})
                stats.update({f"episode/{k}": v for k, v in log.episode.items() if k != "episodes"})
                if writer is not None:
                    for key, value in stats.items():
                        writer.add_scalar(key, value, self.env_steps)
                elapsed = time.perf_counter() - start_time
                per_iter = elapsed / (self.iteration - start_iteration)
                eta_s = min((total - self.iteration) * per_iter, max(0.0, budget_left - elapsed))
                eta = time.strftime("%H:%M:%S", time.gmtime(eta_s))
                bar.update(job, completed=self.iteration, rate=steps / iter_s, reward=mean_return, eta=eta)
                if log_every and self.iteration % log_every == 0:
                    self.console.print(
                        f"{cfg.task} it {self.iteration}/{total} | {steps / iter_s:,.0f} steps/s | "
                        f"reward {mean_return:.2f} | elapsed {time.strftime('%H:%M:%S', time.gmtime(elapsed))} | "
                        f"ETA {eta}", highlight=False, soft_wrap=True)
                if main and self.iteration % cfg.save_interval == 0:
                    self.save(self.run_dir / "checkpoints" / f"model_{self.iteration}.pt")
                out_of_time = time.perf_counter() - start_time >= budget_left
                if ranks is not None:  # all ranks stop at the same iteration
                    out_of_time = ranks.any(out_of_time)
                if out_of_time:
                    bar.update(job, description=f"train {cfg.task} (time budget reached)")
                    break
        mean_return, n_returns = log.mean_return, log.returns_seen
        wall_s = max(time.perf_counter() - start_time, 1e-9)
        total_envs = cfg.num_envs * self.world_size
        summary: dict[str, Any] = {
            "task": cfg.task, "backend": cfg.backend, "num_envs": cfg.num_envs, "iterations": self.iteration,
            "env_steps": self.env_steps, "wall_time_s": round(wall_s, 2), "train_time_s": round(self.train_time_s, 2),
            "steps_per_s": round((self.iteration - start_iteration) * total_envs * cfg.steps_per_env / wall_s, 1),
            "device": str(self.device),
            "final_mean_reward": round(mean_return, 4) if n_returns else None,
            "final_episode": {k: round(v, 4) for k, v in log.episode.items()},
        }
        if ranks is not None:  # every rank must end with rank 0's parameters and normalizers
            summary["distributed"] = {"world_size": self.world_size, "backend": ranks.backend,
                                      "num_envs_per_rank": cfg.num_envs, "num_envs_total": total_envs,
                                      "max_param_divergence": ranks.max_divergence(self.policy)}
        self.task.close()
        if not main:
            return summary
        if self.iteration % cfg.save_interval:  # else the loop has just written it
            self.save(self.run_dir / "checkpoints" / f"model_{self.iteration}.pt")
        self.save(self.run_dir / "checkpoints" / "model.pt")
        writer.flush()
        summary["eval"] = self.evaluate()
        writer.close()
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def evaluate(self) -> dict[str, float]:
        return evaluate_final(self.policy, self.cfg, device=str(self.device))
