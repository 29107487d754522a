"""Teacher-student distillation: one loop for the DAgger, RMA and HIB students (robolearn.policies.students).

Each iteration the student acts in `num_envs` envs for `steps_per_env` steps (with probability `beta` an env
takes the teacher's action instead: DAgger's mixing, decayed linearly to 0 over `beta_iterations`), the frozen
teacher labels every visited state (its action, its privileged latent, the privileged extras), and the student
then takes `epochs` x `minibatches` Adam steps on the student kind's loss:

- dagger: action loss (MSE or Huber) against the teacher's action;
- rma:    MSE between the student's latent and the teacher's (`action_coef` * action loss optional);
- hib:    action loss + `recon_coef` * MSE(decoder(z), normalized extras) + `kl_coef` * KL(q(z | h) || N(0, I)).

`loss/action` (the action-matching MSE) is logged for every kind. The run folder is a training run's:
config.yaml, checkpoints/model.pt (format robolearn-student), tb/, summary.json with an evaluation; `play`,
`eval` and `export` take it like any run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from robolearn.config import declarations_root, from_dict, load_yaml, merge, to_dict
from robolearn.errors import CheckpointError, ConfigError
from robolearn.policies.episode_log import EpisodeLog
from robolearn.policies.evaluate import evaluate_final
from robolearn.policies.history import FrameHistory
from robolearn.policies.runner import CHECKPOINT_VERSION, load_policy
from robolearn.policies.students import StudentCfg, build_student
from robolearn.policies.train_cfg import TrainCfg
from robolearn.sim.tasks import make_task

__all__ = ["DistillCfg", "Distiller", "load_distill_cfg"]


@dataclass(kw_only=True)
class DistillCfg:
    teacher: str  # the teacher's run folder or checkpoint (a robolearn-ppo checkpoint)
    student: StudentCfg = field(default_factory=StudentCfg)
    loss: str = "mse"  # action loss: mse | huber
    num_envs: int = 512
    steps_per_env: int = 24
    max_iterations: int = 300
    max_time_s: float = 0.0  # wall-clock budget (0: none)
    epochs: int = 2
    minibatches: int = 4
    learning_rate: float = 5e-4
    max_grad_norm: float = 1.0
    beta: float = 1.0  # first iteration: probability that an env executes the teacher's action
    beta_iterations: int = 20  # beta decays linearly to 0 over this many iterations
    action_coef: float = 0.0  # rma: weight of an action loss added to the latent loss
    recon_coef: float = 1.0  # hib
    kl_coef: float = 1e-3  # hib
    save_interval: int = 100
    seed: int = 0
    task_overrides: dict[str, Any] = field(default_factory=dict)  # on top of the teacher's

    def __post_init__(self) -> None:
        if self.loss not in ("mse", "huber"):
            raise ConfigError(f"loss must be mse or huber, got {self.loss!r}")
        if min(self.num_envs, self.steps_per_env, self.max_iterations, self.epochs, self.minibatches) < 1:
            raise ConfigError("num_envs, steps_per_env, max_iterations, epochs and minibatches must be >= 1")
        if (self.num_envs * self.steps_per_env) % self.minibatches:
            raise ConfigError(f"num_envs * steps_per_env ({self.num_envs * self.steps_per_env}) must be divisible "
                              f"by minibatches ({self.minibatches})")
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {self.beta}")


def load_distill_cfg(teacher: str | Path, task: str, path: str | Path | None = None,
                     overrides: dict[str, Any] | None = None) -> DistillCfg:
    """policies/distill/<task>.yaml (or the file `path`) with `overrides` on top, for the teacher `teacher`."""
    if path is None:
        path = declarations_root() / "policies" / "distill" / f"{task}.yaml"
        data = load_yaml(path) if path.is_file() else {}
    else:
        data = load_yaml(path)
    data = merge(data, overrides or {})
    data["teacher"] = str(teacher)
    return from_dict(DistillCfg, data, where=str(path))


def _teacher(path: str | Path) -> tuple[TrainCfg, nn.Module, dict[str, Any]]:
    cfg, teacher, ckpt = load_policy(path)
    if ckpt["format"] != "robolearn-ppo":
        raise CheckpointError(f"{path}: a teacher must be a PPO run (robolearn train), not a {ckpt['format']} "
                              "checkpoint")
    teacher.eval()
    teacher.requires_grad_(False)
    return cfg, teacher, ckpt


def _action_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "huber":
        return nn.functional.huber_loss(pred, target, delta=1.0)
    return nn.functional.mse_loss(pred, target)


class Distiller:
    """Distils the frozen teacher of `cfg.teacher` into a `cfg.student.kind` student; writes `run_dir`."""

    def __init__(self, cfg: DistillCfg, run_dir: Path, *, console: Console | None = None) -> None:
        self.cfg, self.run_dir, self.console = cfg, Path(run_dir), console or Console()
        self.train_cfg, self.teacher, tckpt = _teacher(cfg.teacher)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        tc = self.train_cfg
        self.overrides = merge(tc.task_overrides, cfg.task_overrides)
        self.task = make_task(tc.task, cfg.num_envs, backend=tc.backend, seed=cfg.seed, overrides=self.overrides)
        self.obs_dims = self.task.obs_dims
        if tckpt["obs_dims"] != self.obs_dims or tckpt["num_actions"] != self.task.num_actions:
            self.task.close()
            raise CheckpointError(f"{cfg.teacher}: teacher observation/action sizes {tckpt['obs_dims']}, "
                                  f"{tckpt['num_actions']} do not match task {tc.task}: {self.obs_dims}, "
                                  f"{self.task.num_actions}")
        p, priv = self.obs_dims["policy"], self.obs_dims["privileged"]
        try:
            self.student = build_student(cfg.student, self.teacher, p, priv, self.task.num_actions)
        except ConfigError:
            self.task.close()
            raise
        self.params = [q for q in self.student.parameters() if q.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.learning_rate)
        # The hib target: privileged extras normalized with the teacher critic's statistics.
        self.extras_mean = self.teacher.critic_norm.mean[p:].clone()
        self.extras_std = (self.teacher.critic_norm.var[p:] + self.teacher.critic_norm.eps).sqrt()
        T, N, A = cfg.steps_per_env, cfg.num_envs, self.task.num_actions
        self.buf = {"x": torch.zeros(T, N, self.student.actor_dim), "teacher_actions": torch.zeros(T, N, A),
                    "teacher_latent": torch.zeros(T, N, cfg.student.latent_dim),
                    "extras": torch.zeros(T, N, max(priv - p, 1))}
        self.iteration, self.env_steps, self.train_time_s = 0, 0, 0.0

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "format": "robolearn-student", "version": CHECKPOINT_VERSION, "task": self.train_cfg.task,
            "obs_dims": self.obs_dims, "num_actions": self.task.num_actions,
            "joint_names": list(self.task.robot.joint_names), "config": to_dict(self.cfg),
            "train_config": to_dict(self.train_cfg), "model": self.student.state_dict(),
            "iteration": self.iteration, "env_steps": self.env_steps, "train_time_s": self.train_time_s,
        }, path)

    def beta(self) -> float:
        c = self.cfg
        return c.beta * max(0.0, 1.0 - self.iteration / max(1, c.beta_iterations))

    @torch.inference_mode()
    def _collect(self, obs: dict[str, torch.Tensor], history: FrameHistory, x: torch.Tensor, log: EpisodeLog
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        cfg, teacher, p = self.cfg, self.teacher, self.obs_dims["policy"]
        beta, kind = self.beta(), cfg.student.kind
        for t in range(cfg.steps_per_env):
            teacher_in = teacher.actor_input(obs)
            if kind == "rma":  # build_student made sure the teacher is a TeacherActorCritic
                teacher_actions, self.buf["teacher_latent"][t] = teacher.act_with_latent(teacher_in)
            else:
                teacher_actions = teacher.act_mean(teacher_in)
            actions = self.student.act_mean(x)
            if beta > 0:
                use_teacher = torch.rand(cfg.num_envs, generator=self.generator) < beta
                actions = torch.where(use_teacher.unsqueeze(1), teacher_actions, actions)
            self.buf["x"][t] = x
            self.buf["teacher_actions"][t] = teacher_actions
            if kind == "hib":
                self.buf["extras"][t] = (obs["privileged"][:, p:] - self.extras_mean) / self.extras_std
            obs, reward, terminated, truncated, info = self.task.step(actions)
            done = terminated | truncated
            log.step(reward, done)
            x = history.push(obs["policy"], done)
        return obs, x

    def _update(self) -> dict[str, float]:
        cfg, kind = self.cfg, self.cfg.student.kind
        total = cfg.steps_per_env * cfg.num_envs
        flat = {k: v.flatten(0, 1) for k, v in self.buf.items()}
        sums: dict[str, float] = {}
        n = 0
        for _ in range(cfg.epochs):
            order = torch.randperm(total, generator=self.generator)
            for idx in order.chunk(cfg.minibatches):
                out = self.student.forward_train(flat["x"][idx], self.generator)
                action_mse = nn.functional.mse_loss(out["actions"], flat["teacher_actions"][idx])
                terms = {"action": action_mse}
                if kind == "dagger":
                    loss = _action_loss(cfg.loss, out["actions"], flat["teacher_actions"][idx])
                elif kind == "rma":
                    terms["latent"] = nn.functional.mse_loss(out["latent"], flat["teacher_latent"][idx])
                    loss = terms["latent"]
                    if cfg.action_coef > 0:
                        loss = loss + cfg.action_coef * _action_loss(cfg.loss, out["actions"],
                                                                     flat["teacher_actions"][idx])
                else:  # hib
                    mu, logvar = out["latent"], out["logvar"]
                    terms["recon"] = nn.functional.mse_loss(out["decoded"], flat["extras"][idx])
                    terms["kl"] = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()
                    loss = (_action_loss(cfg.loss, out["actions"], flat["teacher_actions"][idx])
                            + cfg.recon_coef * terms["recon"] + cfg.kl_coef * terms["kl"])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                terms["total"] = loss
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value.item()
                n += 1
        return {f"loss/{k}": v / n for k, v in sums.items()}

    def learn(self, *, progress: bool = True) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        writer = SummaryWriter(str(self.run_dir / "tb"))
        obs = self.task.reset()
        history = FrameHistory(cfg.num_envs, self.obs_dims["policy"], cfg.student.history)
        with torch.inference_mode():
            x = history.push(obs["policy"])
        log = EpisodeLog(cfg.num_envs, self.task.device)
        budget = cfg.max_time_s if cfg.max_time_s > 0 else float("inf")
        start = time.perf_counter()
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[rate]:>8.0f} steps/s"), TextColumn("action mse {task.fields[mse]:.4f}"),
                   TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}")]
        live = progress and self.console.is_terminal
        log_every = max(1, cfg.max_iterations // 50) if progress and not live else 0
        name = f"distill {self.train_cfg.task} ({cfg.student.kind})"
        last: dict[str, float] = {}
        with Progress(*columns, console=self.console, disable=not live) as bar:
            job = bar.add_task(name, total=cfg.max_iterations, rate=0.0, mse=0.0, eta="-")
            while self.iteration < cfg.max_iterations:
                t0 = time.perf_counter()
                beta = self.beta()
                obs, x = self._collect(obs, history, x, log)
                self.task.check()
                collect_s = time.perf_counter() - t0
                last = self._update()
                log.end_iteration(self.task)
                iter_s = time.perf_counter() - t0
                self.iteration += 1
                steps = cfg.num_envs * cfg.steps_per_env
                self.env_steps += steps
                self.train_time_s += iter_s
                last.update({"perf/steps_per_s": steps / iter_s, "perf/collect_s": collect_s,
                             "distill/beta": beta, "train/mean_return": log.mean_return})
                last.update({f"episode/{k}": v for k, v in log.episode.items() if k != "episodes"})
                for key, value in last.items():
                    writer.add_scalar(key, value, self.env_steps)
                elapsed = time.perf_counter() - start
                eta_s = min((cfg.max_iterations - self.iteration) * elapsed / self.iteration,
                            max(0.0, budget - elapsed))
                eta = time.strftime("%H:%M:%S", time.gmtime(eta_s))
                bar.update(job, completed=self.iteration, rate=steps / iter_s, mse=last["loss/action"], eta=eta)
                if log_every and self.iteration % log_every == 0:
                    self.console.print(f"{name} it {self.iteration}/{cfg.max_iterations} | {steps / iter_s:,.0f} "
                                       f"steps/s | action mse {last['loss/action']:.4f} | return "
                                       f"{last['train/mean_return']:.2f} | ETA {eta}", highlight=False, soft_wrap=True)
                if self.iteration % cfg.save_interval == 0:
                    self.save(self.run_dir / "checkpoints" / f"model_{self.iteration}.pt")
                if elapsed >= budget:
                    bar.update(job, description=f"{name} (time budget reached)")
                    break
        wall = max(time.perf_counter() - start, 1e-9)
        self.task.close()
        self.save(self.run_dir / "checkpoints" / "model.pt")
        summary: dict[str, Any] = {
            "task": self.train_cfg.task, "student": cfg.student.kind, "teacher": cfg.teacher,
            "iterations": self.iteration, "env_steps": self.env_steps, "wall_time_s": round(wall, 2),
            "steps_per_s": round(self.env_steps / wall, 1),
            "final_losses": {k: round(v, 6) for k, v in last.items() if k.startswith("loss/")},
        }
        summary["eval"] = self.evaluate()
        writer.close()
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def evaluate(self) -> dict[str, float]:
        return evaluate_final(self.student, self.train_cfg, self.cfg.task_overrides)
