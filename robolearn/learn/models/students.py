"""Deployable students: policies that read only a history of the policy (proprioceptive) observations.

Input: H frames of the policy group, flattened oldest first, x [B, H * P] (the bundle's `history` layout).
Each student normalizes frames with the teacher's policy normalizer (copied, frozen), encodes the history
[B, H, P] into a latent [B, L] and acts from [current frame, latent]:

- `dagger`: history encoder -> features; own action head; trained to match the teacher's actions.
- `rma` (Kumar et al. 2021, arXiv:2107.04034): the encoder regresses the teacher's privileged latent z and the
  teacher's own frozen action head acts on [current frame, z_hat]; trained on the latent error.
- `hib` (historical information bottleneck, He et al. 2023, arXiv:2305.18464): a stochastic encoder
  q(z | history) = N(mu, sigma) learns the privileged representation itself: a decoder reconstructs the
  privileged extras from z (a variational bound on I(z; privileged)), a KL term to N(0, I) bounds I(z; history),
  and the action head on [current frame, z] matches the teacher. Deterministic actions use z = mu. The paper
  trains the policy with RL in one stage and bounds I(z; privileged) contrastively; here it shares the
  distillation loop, so actions come from the teacher's labels.

Encoders: `mlp` (flattened history), `tcn` (per-frame embedding, then 1-D convolutions over time, as RMA's
adaptation module) or `gru` (per-frame embedding, then a GRU run over the window, oldest frame first; its last
hidden state feeds the output MLP). The GRU is recurrent over the window, not across steps: each action starts it
from zero on the last H frames, so the student keeps the stateless history interface (same bundle, same runtime)
and an episode start needs no hidden-state reset.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robolearn.config import from_dict
from robolearn.errors import CheckpointError, ConfigError
from robolearn.learn.config import TrainCfg
from robolearn.learn.models.actor_critic import _ACTIVATIONS, ActorCritic, EmpiricalNormalizer, TeacherActorCritic, mlp

__all__ = ["STUDENT_KINDS", "ENCODERS", "StudentCfg", "HistoryEncoder", "Student", "build_student", "load_student"]

STUDENT_KINDS = ("dagger", "rma", "hib")
ENCODERS = ("tcn", "gru", "mlp")


@dataclass(kw_only=True)
class StudentCfg:
    kind: str = "dagger"  # dagger | rma | hib
    history: int = 25  # policy frames (0.5 s at 50 Hz)
    encoder: str = "tcn"  # tcn | gru | mlp
    encoder_hidden: list[int] = field(default_factory=lambda: [256, 128])  # mlp encoder, or the tcn and gru output MLP
    tcn_channels: int = 32  # tcn and gru: width of the per-frame embedding (and of the convolutions)
    gru_hidden: int = 64  # gru: hidden state size
    latent_dim: int = 32  # rma: must equal the teacher's network.latent_dim
    head_hidden: list[int] = field(default_factory=lambda: [256, 128, 64])  # dagger and hib action heads
    decoder_hidden: list[int] = field(default_factory=lambda: [128])  # hib: z -> privileged extras
    activation: str = "elu"

    def __post_init__(self) -> None:
        if self.kind not in STUDENT_KINDS:
            raise ConfigError(f"student.kind must be one of {', '.join(STUDENT_KINDS)}, got {self.kind!r}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"student.encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        sizes = {"history": self.history, "latent_dim": self.latent_dim, "tcn_channels": self.tcn_channels,
                 "gru_hidden": self.gru_hidden}
        small = ", ".join(f"student.{k}={v}" for k, v in sizes.items() if v < 1)
        if small:
            raise ConfigError(f"{small}: must be >= 1")
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(f"student.activation must be one of {', '.join(_ACTIVATIONS)}, got {self.activation!r}")


class HistoryEncoder(nn.Module):
    """Normalized frames [B, H, P] -> [B, out]."""

    def __init__(self, kind: str, history: int, frame_dim: int, out: int, *, hidden: list[int], channels: int,
                 activation: str, gru_hidden: int = 64) -> None:
        super().__init__()
        act = _ACTIVATIONS[activation]
        self.kind = kind
        if kind == "mlp":
            self.head = mlp(history * frame_dim, hidden, out, activation)
            return
        if kind == "gru":
            self.embed = nn.Sequential(nn.Linear(frame_dim, channels), act())
            self.gru = nn.GRU(channels, gru_hidden, batch_first=True)
            self.head = mlp(gru_hidden, hidden, out, activation)
            return
        layers: list[nn.Module] = []
        length = history
        for kernel, stride in ((5, 2), (3, 2), (3, 1)):  # shrink time while it is long enough
            if length < kernel:
                break
            layers += [nn.Conv1d(channels, channels, kernel, stride), act()]
            length = (length - kernel) // stride + 1
        self.embed = nn.Sequential(nn.Linear(frame_dim, channels), act())  # after the convolutions: the
        self.conv = nn.Sequential(*layers)  # initialization order (and so a seeded run) is as before gru existed
        self.head = mlp(channels * length, hidden, out, activation)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.kind == "mlp":
            return self.head(frames.flatten(1))
        if self.kind == "gru":
            _, last = self.gru(self.embed(frames))  # last: [1, B, gru_hidden], after the newest frame
            return self.head(last[0])
        h = self.embed(frames).transpose(1, 2)  # [B, C, H]
        return self.head(self.conv(h).flatten(1))


class Student(nn.Module):
    """A history student (see the module doc). `act_mean(x [B, H * P]) -> [B, A]`, like an ActorCritic's."""

    reads_privileged = False

    def __init__(self, cfg: StudentCfg, frame_dim: int, num_actions: int, *, extras_dim: int,
                 teacher_head: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg, self.kind, self.history, self.frame_dim = cfg, cfg.kind, cfg.history, frame_dim
        self.actor_dim = cfg.history * frame_dim
        self.obs_norm = EmpiricalNormalizer(frame_dim)  # the teacher's, copied by build_student; never updated
        latent_out = 2 * cfg.latent_dim if cfg.kind == "hib" else cfg.latent_dim
        self.encoder = HistoryEncoder(cfg.encoder, cfg.history, frame_dim, latent_out, hidden=cfg.encoder_hidden,
                                      channels=cfg.tcn_channels, activation=cfg.activation,
                                      gru_hidden=cfg.gru_hidden)
        if cfg.kind == "rma":
            if teacher_head is None:
                raise ValueError("an rma student needs the teacher's action head")
            self.head = copy.deepcopy(teacher_head).requires_grad_(False)
        else:
            self.head = mlp(frame_dim + cfg.latent_dim, cfg.head_hidden, num_actions, cfg.activation)
        # hib: reconstructs the (normalized) privileged extras from z.
        self.decoder = mlp(cfg.latent_dim, cfg.decoder_hidden, extras_dim, cfg.activation) if cfg.kind == "hib" \
            else None

    def actor_input(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return obs["policy"]  # one frame; PolicyInput stacks `history` of them

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x [B, H * P] -> (normalized current frame [B, P], latent mean [B, L], log variance [B, L] or None)."""
        frames = self.obs_norm(x.view(x.shape[0], self.history, self.frame_dim))
        out = self.encoder(frames)
        if self.kind == "hib":
            mu, logvar = out.chunk(2, dim=1)
            return frames[:, -1], mu, logvar.clamp(-10.0, 4.0)
        return frames[:, -1], out, None

    def act_mean(self, x: torch.Tensor) -> torch.Tensor:
        current, z, _ = self.encode(x)
        return self.head(torch.cat([current, z], dim=1))

    def forward_train(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Everything the losses need: actions, latent mean; hib adds logvar, the sample z and its decoding."""
        current, mu, logvar = self.encode(x)
        out = {"latent": mu}
        z = mu
        if logvar is not None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device)
            z = mu + (0.5 * logvar).exp() * eps
            out.update(logvar=logvar, decoded=self.decoder(z))
        out["actions"] = self.head(torch.cat([current, z], dim=1))
        return out


def build_student(cfg: StudentCfg, teacher: ActorCritic, policy_dim: int, privileged_dim: int,
                  num_actions: int) -> Student:
    """A student for `teacher`, with the teacher's policy-frame normalizer (and, for rma, its action head)."""
    if cfg.kind == "rma":
        if not isinstance(teacher, TeacherActorCritic):
            raise ConfigError("student.kind rma regresses the teacher's privileged latent: the teacher must be "
                              "trained with network.privileged_encoder (a TeacherActorCritic)")
        if cfg.latent_dim != teacher.latent_dim:
            raise ConfigError(f"student.latent_dim ({cfg.latent_dim}) must equal the teacher's network.latent_dim "
                              f"({teacher.latent_dim}) for an rma student")
    if privileged_dim <= policy_dim and cfg.kind == "hib":
        raise ConfigError("student.kind hib reconstructs privileged extras; the task has none")
    student = Student(cfg, policy_dim, num_actions, extras_dim=max(privileged_dim - policy_dim, 1),
                      teacher_head=teacher.actor if cfg.kind == "rma" else None)
    with torch.no_grad():  # the teacher's normalizer starts with the policy terms in either teacher class
        student.obs_norm.mean.copy_(teacher.actor_norm.mean[:policy_dim])
        student.obs_norm.var.copy_(teacher.actor_norm.var[:policy_dim])
        student.obs_norm.count.copy_(teacher.actor_norm.count)
    return student


def load_student(ckpt: dict[str, Any], where: str) -> tuple[TrainCfg, Student]:
    """(the teacher's training config, the student) of a robolearn-student checkpoint."""
    train_cfg = from_dict(TrainCfg, ckpt["train_config"], where=f"{where} (teacher config)")
    scfg = from_dict(StudentCfg, ckpt["config"]["student"], where=f"{where} (student config)")
    head = None
    if scfg.kind == "rma":  # the state dict holds the head's weights; only its layout comes from the teacher
        n = train_cfg.network
        head = mlp(ckpt["obs_dims"]["policy"] + scfg.latent_dim, n.actor_hidden, ckpt["num_actions"], n.activation)
    obs = ckpt["obs_dims"]
    student = Student(scfg, obs["policy"], ckpt["num_actions"], extras_dim=max(obs["privileged"] - obs["policy"], 1),
                      teacher_head=head)
    try:
        student.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise CheckpointError(f"{where}: student weights do not match its config") from None
    return train_cfg, student
