"""Teacher-student distillation, an algorithm of the shared Runner: DAgger, RMA and HIB students
(robolearn.learn.models.students).

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

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from robolearn.config import declarations_root, from_dict, load_yaml, merge, to_dict
from robolearn.errors import CheckpointError, ConfigError
from robolearn.learn.algorithm import Algorithm
from robolearn.learn.checkpoint import PPO_FORMATS, load_policy
from robolearn.learn.config import TrainCfg
from robolearn.learn.evaluate import evaluate_final
from robolearn.learn.history import FrameHistory
from robolearn.learn.models.students import StudentCfg, build_student
from robolearn.learn.runner import Runner, RunnerCfg
from robolearn.sim.tasks import make_task

__all__ = ["DistillCfg", "Distillation", "load_distill_cfg", "make_distillation_runner"]


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
        for name in ("num_envs", "steps_per_env", "max_iterations", "epochs", "minibatches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
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
    if ckpt["format"] not in PPO_FORMATS:
        raise CheckpointError(f"{path}: a teacher must be a PPO run (robolearn train), not a {ckpt['format']} "
                              "checkpoint")
    teacher.eval()
    teacher.requires_grad_(False)
    return cfg, teacher, ckpt


def _action_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "huber":
        return nn.functional.huber_loss(pred, target, delta=1.0)
    return nn.functional.mse_loss(pred, target)


class Distillation(Algorithm):
    """Distils a frozen teacher into a `cfg.student.kind` student (see the module doc). The student acts (DAgger)
    from its own frame history, except where an env executes the teacher's action with probability `beta`."""

    checkpoint_format = "robolearn-student"
    progress_metric = ("action mse", "loss/action")

    def __init__(self, cfg: DistillCfg, train_cfg: TrainCfg, teacher: nn.Module, student: nn.Module,
                 obs_dims: dict[str, int], num_actions: int, device: torch.device) -> None:
        self.cfg, self.train_cfg, self.teacher, self.student = cfg, train_cfg, teacher, student
        self.policy_dim = p = obs_dims["policy"]
        self.params = [q for q in student.parameters() if q.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.learning_rate)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.device = device
        # The hib target: privileged extras normalized with the teacher critic's statistics.
        self.extras_mean = teacher.critic_norm.mean[p:].clone()
        self.extras_std = (teacher.critic_norm.var[p:] + teacher.critic_norm.eps).sqrt()
        T, N, A = cfg.steps_per_env, cfg.num_envs, num_actions
        zeros = functools.partial(torch.zeros, device=device)
        self.buf = {"x": zeros(T, N, student.actor_dim), "teacher_actions": zeros(T, N, A),
                    "teacher_latent": zeros(T, N, cfg.student.latent_dim),
                    "extras": zeros(T, N, max(obs_dims["privileged"] - p, 1))}
        self.history = FrameHistory(N, p, cfg.student.history, device)
        self.iteration, self.t = 0, 0
        self._x: torch.Tensor | None = None  # the student's input for the current observation

    def beta(self) -> float:
        c = self.cfg
        return c.beta * max(0.0, 1.0 - self.iteration / max(1, c.beta_iterations))

    def act(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg, teacher, p, t = self.cfg, self.teacher, self.policy_dim, self.t
        if self._x is None:  # the first observation: fills every env's history
            self._x = self.history.push(obs["policy"])
        teacher_in = teacher.actor_input(obs)
        if cfg.student.kind == "rma":  # build_student made sure the teacher is a TeacherActorCritic
            teacher_actions, self.buf["teacher_latent"][t] = teacher.act_with_latent(teacher_in)
        else:
            teacher_actions = teacher.act_mean(teacher_in)
        actions = self.student.act_mean(self._x)
        beta = self.beta()
        if beta > 0:
            use_teacher = torch.rand(cfg.num_envs, generator=self.generator, device=self.device) < beta
            actions = torch.where(use_teacher.unsqueeze(1), teacher_actions, actions)
        self.buf["x"][t] = self._x
        self.buf["teacher_actions"][t] = teacher_actions
        if cfg.student.kind == "hib":
            self.buf["extras"][t] = (obs["privileged"][:, p:] - self.extras_mean) / self.extras_std
        return actions

    def process_env_step(self, obs: dict[str, torch.Tensor], reward: torch.Tensor, cost: torch.Tensor,
                         terminated: torch.Tensor, truncated: torch.Tensor, info: dict[str, Any]) -> None:
        self._x = self.history.push(obs["policy"], terminated | truncated)
        self.t += 1

    def update(self) -> dict[str, float]:
        cfg, kind = self.cfg, self.cfg.student.kind
        total = cfg.steps_per_env * cfg.num_envs
        flat = {k: v.flatten(0, 1) for k, v in self.buf.items()}
        sums: dict[str, torch.Tensor] = {}
        n = 0
        for _ in range(cfg.epochs):
            order = torch.randperm(total, generator=self.generator, device=self.device)
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
                    sums[key] = sums.get(key, 0.0) + value.detach()
                n += 1
        stats = {f"loss/{k}": v / n for k, v in zip(sums, torch.stack(list(sums.values())).tolist(), strict=True)}
        stats["distill/beta"] = self.beta()
        self.iteration += 1
        self.t = 0
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.student.state_dict(), "train_config": to_dict(self.train_cfg),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.student.load_state_dict(state["model"])
        except RuntimeError:
            raise CheckpointError("checkpoint: student weights do not match its config") from None
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state.get("iteration", 0))  # beta's schedule continues

    def deployable(self) -> nn.Module:
        return self.student

    def summary(self, stats: dict[str, float]) -> dict[str, Any]:
        return {"student": self.cfg.student.kind, "teacher": self.cfg.teacher,
                "final_losses": {k: round(v, 6) for k, v in stats.items() if k.startswith("loss/")}}


def make_distillation_runner(cfg: DistillCfg, run_dir: str | Path, *, console: Console | None = None,
                             log_interval: int = 10) -> Runner:
    """The teacher (frozen), the task with the teacher's settings and `cfg.task_overrides`, the student and the
    Runner, on the teacher's training device."""
    train_cfg, teacher, tckpt = _teacher(cfg.teacher)
    device = torch.device(train_cfg.device)
    torch.manual_seed(cfg.seed)
    overrides = merge(train_cfg.task_overrides, cfg.task_overrides)
    task = make_task(train_cfg.task, cfg.num_envs, backend=train_cfg.backend, device=str(device), seed=cfg.seed,
                     overrides=overrides)
    obs_dims = task.obs_dims
    try:
        if tckpt["obs_dims"] != obs_dims or tckpt["num_actions"] != task.num_actions:
            raise CheckpointError(f"{cfg.teacher}: teacher observation/action sizes {tckpt['obs_dims']}, "
                                  f"{tckpt['num_actions']} do not match task {train_cfg.task}: {obs_dims}, "
                                  f"{task.num_actions}")
        with device:
            student = build_student(cfg.student, teacher, obs_dims["policy"], obs_dims["privileged"],
                                    task.num_actions)
    except (CheckpointError, ConfigError):
        task.close()
        raise
    teacher.to(device)
    algorithm = Distillation(cfg, train_cfg, teacher, student, obs_dims, task.num_actions, device)
    meta = {"task": train_cfg.task, "obs_dims": obs_dims, "num_actions": task.num_actions,
            "joint_names": list(task.robot.joint_names)}
    settings = RunnerCfg(steps_per_env=cfg.steps_per_env, max_iterations=cfg.max_iterations,
                         max_time_s=cfg.max_time_s, save_interval=cfg.save_interval, log_interval=log_interval)
    return Runner(algorithm, task, settings, run_dir, config=to_dict(cfg), meta=meta, console=console,
                  evaluate=lambda p: evaluate_final(p, train_cfg, cfg.task_overrides, device=str(device)))
