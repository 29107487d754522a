"""Multi-process PPO with torch.distributed: one env batch per rank, launched by `torchrun`.

    torchrun --standalone --nproc_per_node=N -m robolearn.cli train TASK ...   (or: robolearn train TASK --nproc N)

What every rank does (W ranks, each with `num_envs` envs of its own, seeded `seed + rank`):
- parameters and normalizers are broadcast from rank 0 at start; a resumed checkpoint is read by rank 0 and
  broadcast as a whole (model, optimizer, learning rate, counters);
- each minibatch's gradients are averaged with ONE flat all-reduce that also carries the minibatch KL, so
  the adaptive learning rate is decided on the mean KL and is the same on every rank;
- advantages are normalized with the mean and std over all ranks' rollouts;
- observation normalizers are merged every env step (all-gather of per-rank batch moments, combined in rank
  order with the parallel Welford formula), so they stay identical on all ranks;
- the minibatch permutation generator has the same seed on every rank: the global minibatch is the union
  of the ranks' rows at the same (step, env) positions, which is what one process with W times the envs
  forms with `RolloutStorage.minibatches(..., shards=W)`.

With W == 1 (no WORLD_SIZE, or WORLD_SIZE=1) `init_distributed` returns None and no collective is ever called.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from robolearn.errors import RobolearnError

__all__ = ["DistributedError", "Distributed", "init_distributed", "resolve_backend", "launcher_world_size",
           "run_torchrun", "BACKENDS", "LAUNCH_HINT"]

BACKENDS = ("auto", "gloo", "nccl")
REQUIRED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = "launch with `torchrun --nproc_per_node=N -m robolearn.cli train ...` or `robolearn train ... --nproc N`"


class DistributedError(RobolearnError):
    """Distributed training is misconfigured (launcher environment, backend, devices)."""


def resolve_backend(requested: str, device: torch.device) -> str:
    """`auto` is nccl for CUDA training and gloo for CPU training; nccl without CUDA is an error."""
    if requested not in BACKENDS:
        raise DistributedError(f"unknown distributed backend {requested!r}; valid: {', '.join(BACKENDS)}")
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if requested == "nccl":
        if not torch.cuda.is_available():
            raise DistributedError("distributed backend 'nccl' needs CUDA GPUs, but torch.cuda.is_available() is "
                                   "False; use dist_backend=gloo (or auto) on the CPU")
        if device.type != "cuda":
            raise DistributedError(f"distributed backend 'nccl' all-reduces CUDA tensors, but training runs on "
                                   f"{device.type}; use dist_backend=gloo (or auto)")
    return requested


def launcher_world_size() -> str | None:
    """The processes per node a launcher (torchrun) started, or None when this process was not launched so."""
    return os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE"))


def run_torchrun(nproc: int, module_args: list[str]) -> int:
    """Run `python -m <module_args>` as `nproc` torchrun workers on this machine and wait; returns the exit code.
    Each worker gets an equal share of the CPU threads (OMP_NUM_THREADS) unless the caller set it."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "--", *module_args]  # `--`: torchrun must not read the module's options as its own
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.run(cmd, env=env).returncode


def _env_int(name: str) -> int:
    raw = os.environ[name]
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {name}={raw!r} is not an integer") from None


class Distributed:
    """An initialized process group of `world_size` > 1 ranks, and the collectives PPO needs."""

    def __init__(self, *, rank: int, local_rank: int, world_size: int, backend: str, device: torch.device,
                 owns_group: bool) -> None:
        self.rank, self.local_rank, self.world_size = rank, local_rank, world_size
        self.backend, self.device, self.owns_group = backend, device, owns_group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self, *, wait_for_peers: bool = True) -> None:
        """Destroy the process group if this object created it.

        On a clean exit every rank first waits at a barrier, so no rank tears its gloo connections down while
        another still uses them (rank 0 evaluates and writes files after the last collective; a rank that
        shut down meanwhile was seen to abort in CI with "terminate called without an active exception").
        After an error pass wait_for_peers=False: the peers may never arrive, and torchrun stops them."""
        if self.owns_group and tdist.is_initialized():
            if wait_for_peers:
                tdist.barrier()
            tdist.destroy_process_group()
        self.owns_group = False

    # -- start / resume -----------------------------------------------------------------------------------
    @torch.no_grad()
    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers (normalizer statistics included) onto every rank, in place."""
        for tensor in module.state_dict().values():
            tdist.broadcast(tensor, src=0)

    def broadcast_object(self, obj: Any) -> Any:
        """A picklable object from rank 0 (what other ranks pass is ignored)."""
        box = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    # -- PPO update ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def average_gradients(self, params: Sequence[nn.Parameter], *extras: torch.Tensor) -> list[torch.Tensor]:
        """Average the gradients of `params` over ranks with one flat all-reduce; scalars in `extras` ride in
        the same buffer and come back averaged. A parameter without a gradient counts as zero on its rank."""
        parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device, dtype=p.dtype)
                 for p in params]
        parts += [e.reshape(1).to(parts[0].dtype) for e in extras]
        flat = torch.cat(parts)
        tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            if p.grad is None:
                p.grad = flat[offset : offset + n].view_as(p).clone()
            else:
                p.grad.copy_(flat[offset : offset + n].view_as(p))
            offset += n
        return [flat[offset + i].to(e.dtype) for i, e in enumerate(extras)]

    @torch.no_grad()
    def mean_std(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and unbiased std of all elements of `x` on all ranks (float64 sums, two small all-reduces)."""
        x64 = x.double()
        sums = torch.stack([x64.sum(), torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device)])
        tdist.all_reduce(sums, op=tdist.ReduceOp.SUM)
        mean = sums[0] / sums[1]
        sq = (x64 - mean).square().sum()
        tdist.all_reduce(sq, op=tdist.ReduceOp.SUM)
        std = torch.sqrt(sq / (sums[1] - 1).clamp(min=1.0))
        return mean.to(x.dtype), std.to(x.dtype)

    @torch.no_grad()
    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise mean over ranks of a small tensor (logging statistics)."""
        out = values.clone()
        tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
        return out / self.world_size

    @torch.no_grad()
    def sum(self, values: torch.Tensor) -> torch.Tensor:
        out = values.clone()
        tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one (e.g. the time budget ran out)."""
        return bool(self.sum(torch.tensor([float(flag)], device=self.device)).item() > 0)

    # -- rollouts -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_normalizers(self, pairs: Iterable[tuple[nn.Module, torch.Tensor]]) -> None:
        """Update each EmpiricalNormalizer with its batch `[B, D]` from ALL ranks: one all-gather of every
        rank's (count, mean, biased var), merged in rank order; the same result on every rank and, up to
        rounding, what one process updating with the concatenated batch gets."""
        pairs = list(pairs)
        local = []
        for _, x in pairs:
            local += [x.mean(0).double(), x.var(0, unbiased=False).double()]
        count = float(pairs[0][1].shape[0])
        local_t = torch.cat([torch.tensor([count], dtype=torch.float64, device=local[0].device), *local])
        gathered = [torch.empty_like(local_t) for _ in range(self.world_size)]
        tdist.all_gather(gathered, local_t)
        counts = torch.stack([g[0] for g in gathered])
        offset = 1
        for norm, x in pairs:
            d = x.shape[1]
            means = torch.stack([g[offset : offset + d] for g in gathered])
            vars_ = torch.stack([g[offset + d : offset + 2 * d] for g in gathered])
            offset += 2 * d
            n, mean, var = _merge_moments(counts, means, vars_)
            _apply_moments(norm, int(n), mean.to(x.dtype), var.to(x.dtype))

    # -- checks -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def max_divergence(self, module: nn.Module) -> float:
        """Largest |difference| between any rank's parameters/buffers and rank 0's (0.0 when in sync)."""
        flat = torch.cat([t.detach().double().reshape(-1) for t in module.state_dict().values()])
        reference = flat.clone()
        tdist.broadcast(reference, src=0)
        diff = (flat - reference).abs().max().reshape(1)
        tdist.all_reduce(diff, op=tdist.ReduceOp.MAX)
        return float(diff.item())


def _merge_moments(counts: torch.Tensor, means: torch.Tensor, vars_: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chan et al.'s parallel variance: combine per-rank (n, mean, biased var) in rank order."""
    n, mean, m2 = counts[0], means[0], vars_[0] * counts[0]
    for k in range(1, counts.shape[0]):
        nb = counts[k]
        total = n + nb
        delta = means[k] - mean
        mean = mean + delta * (nb / total)
        m2 = m2 + vars_[k] * nb + delta.square() * (n * nb / total)
        n = total
    return n, mean, m2 / n


def _apply_moments(norm: nn.Module, n: int, batch_mean: torch.Tensor, batch_var: torch.Tensor) -> None:
    """EmpiricalNormalizer.update for a batch given by its moments (same formula, so one rank and one process
    with the concatenated batch agree)."""
    total = norm.count + n
    delta = batch_mean - norm.mean
    norm.mean += delta * (n / total)
    m2 = norm.var * norm.count + batch_var * n + delta.square() * norm.count * n / total
    norm.var.copy_(m2 / total)
    norm.count.copy_(total)


def _train_device(device: torch.device, local_rank: int) -> torch.device:
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise DistributedError(f"training device {device} requested but torch.cuda.is_available() is False")
    visible = torch.cuda.device_count()
    index = local_rank if device.index is None else device.index
    if device.index is not None and device.index != local_rank:
        raise DistributedError(f"rank with LOCAL_RANK={local_rank} was given device {device}; each rank trains "
                               f"on cuda:LOCAL_RANK (pass device 'cuda' without an index)")
    if index >= visible:
        raise DistributedError(f"LOCAL_RANK={local_rank} but only {visible} CUDA device(s) are visible; use at most "
                               f"--nproc_per_node={visible}")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_distributed(backend: str = "auto", device: str | torch.device = "cpu", *,
                     timeout_s: float = 1800.0) -> Distributed | None:
    """Join the process group described by torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT). Returns None for a single process (WORLD_SIZE unset or 1): no collectives at all then.
    An already-initialized default group is reused (and not destroyed by `close`)."""
    device = torch.device(device)
    if backend not in BACKENDS:
        raise DistributedError(f"unknown distributed backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if "WORLD_SIZE" not in os.environ:
        return None
    world_size = _env_int("WORLD_SIZE")
    if world_size < 1:
        raise DistributedError(f"WORLD_SIZE must be >= 1, got {world_size}")
    if world_size == 1:
        return None
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        raise DistributedError(f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; {LAUNCH_HINT}")
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if not 0 <= rank < world_size:
        raise DistributedError(f"RANK={rank} is outside [0, WORLD_SIZE={world_size})")
    name = resolve_backend(backend, device)
    if not tdist.is_available():
        raise DistributedError("this torch build has no torch.distributed support")
    if name == "gloo" and not tdist.is_gloo_available():
        raise DistributedError("this torch build has no gloo backend")
    device = _train_device(device, local_rank)
    owns = not tdist.is_initialized()
    if owns:
        tdist.init_process_group(name, init_method="env://", rank=rank, world_size=world_size,
                                 timeout=datetime.timedelta(seconds=timeout_s))
    elif tdist.get_world_size() != world_size or tdist.get_rank() != rank:
        raise DistributedError(f"a process group of world size {tdist.get_world_size()} (rank {tdist.get_rank()}) "
                               f"already exists, but the environment says {world_size} (rank {rank})")
    else:
        name = tdist.get_backend()
    return Distributed(rank=rank, local_rank=local_rank, world_size=world_size, backend=name, device=device,
                       owns_group=owns)
