"""Distributed PPO: 2 real gloo processes give what 1 process gives with the double batch, and a real
`robolearn train --nproc 2` (torchrun) run writes one run folder and ends with identical ranks.

What is compared, and why it is equal. W = 2 ranks each hold the rollout of n envs; the single process holds
all 2n envs (rank r's envs are its envs [r*n, (r+1)*n)). Every rank shuffles with the same generator seed, so
the global minibatch i is the union of the ranks' rows at the same (step, env-in-rank) positions: exactly the
minibatch that `RolloutStorage.minibatches(..., shards=2)` forms for the single process. Each loss term is a
mean over equally many rows per rank, so the mean of the ranks' gradients (one all-reduce) is the gradient of
the single process's loss; the KL that drives the adaptive learning rate is averaged the same way; advantages
are normalized with the global mean/std; normalizers are merged with the parallel Welford formula. What is
left is float32 rounding (other summation order and thread counts): the tolerance is 1e-5 absolute on
parameters of size ~0.1-1 after 8 Adam steps (the adaptive lr grows from 1e-3 to 7.6e-3 on the way). Observed:
5e-8, 200x below it; a wrong minibatch partition (shards=1) moves parameters by 4e-2, which the test checks too
(> 100x the tolerance), so the tolerance separates rounding from a real difference.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from robolearn.errors import ConfigError
from robolearn.learn.config import load_train_cfg
from robolearn.learn.distributed import DistributedError, init_distributed, resolve_backend
from robolearn.learn.models.actor_critic import ActorCritic
from robolearn.learn.ppo import PPO, PPOCfg
from robolearn.learn.storage import RolloutStorage

WORLD, N, T, P, C, A = 2, 32, 16, 6, 9, 3  # ranks, envs per rank, steps, actor obs, critic obs, actions
PPO_CFG = dict(epochs=2, minibatches=4, learning_rate=1e-3, desired_kl=0.01)
GAMMA, LAM, GEN_SEED = 0.99, 0.95, 7
TOL = 1e-5


def _policy() -> ActorCritic:
    return ActorCritic(P, C, A, actor_hidden=[32, 32], critic_hidden=[32, 32], init_std=0.8)


def _fixed_data() -> dict[str, torch.Tensor]:
    """A rollout of 2n envs (observations with non-trivial scale for the normalizers) and the initial policy."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    policy = _policy()
    data: dict[str, torch.Tensor] = {
        "actor_obs": torch.randn(T, WORLD * N, P, generator=g) * 3.0 + 1.0,
        "critic_obs": torch.randn(T, WORLD * N, C, generator=g) * 0.5 - 2.0,
        "rewards": torch.randn(T, WORLD * N, generator=g),
        "dones": (torch.rand(T, WORLD * N, generator=g) < 0.1).float(),
        "last_values": torch.randn(WORLD * N, generator=g),
    }
    initial = {k: v.clone() for k, v in policy.state_dict().items()}
    # What the rollout recorded: the behaviour policy after its normalizer updates (so ratios start at 1).
    for t in range(T):
        policy.update_normalizers(data["actor_obs"][t], data["critic_obs"][t])
    with torch.no_grad():
        dist = policy.distribution(data["actor_obs"])
        data["actions"] = dist.sample()
        data["log_prob"] = dist.log_prob(data["actions"]).sum(-1)
        data["mean"], data["std"] = dist.mean, dist.stddev.expand_as(dist.mean)
        data["values"] = policy.value(data["critic_obs"]).squeeze(-1)
    return {**data, **{f"initial.{k}": v for k, v in initial.items()}}


def _fill(storage: RolloutStorage, data: dict[str, torch.Tensor], envs: slice) -> None:
    for t in range(T):
        storage.add(*(data[k][t, envs] for k in ("actor_obs", "critic_obs", "actions", "log_prob", "mean", "std",
                                                 "values", "rewards", "dones")))


def _initial_state(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("initial."):]: v for k, v in data.items() if k.startswith("initial.")}


def _reference(data: dict[str, torch.Tensor], shards: int) -> dict:
    """One process, all 2n envs."""
    policy = _policy()
    policy.load_state_dict(_initial_state(data))
    for t in range(T):
        policy.update_normalizers(data["actor_obs"][t], data["critic_obs"][t])
    ppo = PPO(policy, PPOCfg(**PPO_CFG), num_envs=WORLD * N, steps_per_env=T,
              generator=torch.Generator().manual_seed(GEN_SEED))
    storage = ppo.storage
    _fill(storage, data, slice(None))
    storage.compute_gae(data["last_values"], GAMMA, LAM)
    advantages = storage.advantages.clone()
    stats = ppo.update(shards=shards)
    return {"state": policy.state_dict(), "lr": ppo.lr, "stats": stats, "advantages": advantages}


def _worker(rank: int, port: int, data_path: str, out_dir: str) -> None:
    """One rank: real gloo group from torchrun-style environment variables; holds envs [rank*n, (rank+1)*n)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    data = torch.load(data_path)
    ranks = init_distributed("auto", "cpu", timeout_s=60)
    assert ranks is not None and ranks.backend == "gloo" and ranks.rank == rank
    try:
        torch.manual_seed(100 + rank)  # rank 1 starts from other weights: the broadcast must fix that
        policy = _policy()
        if rank == 0:
            policy.load_state_dict(_initial_state(data))
        ranks.broadcast_module(policy)
        broadcast_ok = all(torch.equal(v, _initial_state(data)[k]) for k, v in policy.state_dict().items())
        envs = slice(rank * N, (rank + 1) * N)
        for t in range(T):  # the rollout's normalizer updates, merged over ranks
            ranks.update_normalizers(((policy.actor_norm, data["actor_obs"][t, envs]),
                                      (policy.critic_norm, data["critic_obs"][t, envs])))
        ppo = PPO(policy, PPOCfg(**PPO_CFG), num_envs=N, steps_per_env=T,
                  generator=torch.Generator().manual_seed(GEN_SEED), dist=ranks)
        storage = ppo.storage
        _fill(storage, data, envs)
        storage.compute_gae(data["last_values"][envs], GAMMA, LAM, mean_std=ranks.mean_std)
        advantages = storage.advantages.clone()
        stats = ppo.update()  # each rank: shards=1 over its own envs
        in_sync = ranks.max_divergence(policy)
        state = {k: v.clone() for k, v in policy.state_dict().items()}
        with torch.no_grad():  # the divergence check must see a rank that drifted
            if rank == 1:
                policy.log_std.add_(0.5)
        drifted = ranks.max_divergence(policy)
        torch.save({"state": state, "lr": ppo.lr, "stats": stats, "advantages": advantages,
                    "broadcast_ok": broadcast_ok, "in_sync": in_sync, "drifted": drifted},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        ranks.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_gloo_ranks_equal_one_process_with_double_batch(tmp_path):
    data = _fixed_data()
    torch.save(data, tmp_path / "data.pt")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path / "data.pt"), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    ref = _reference(data, shards=WORLD)

    assert r0["broadcast_ok"] and r1["broadcast_ok"]
    # Ranks are bit-identical to each other (same all-reduced gradients, same merged normalizers)...
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
    assert r0["lr"] == r1["lr"] and r0["in_sync"] == 0.0 and r1["in_sync"] == 0.0
    assert r0["drifted"] == pytest.approx(0.5) and r1["drifted"] == pytest.approx(0.5)
    # ...and equal to the single process with the double batch, within float32 rounding.
    torch.testing.assert_close(torch.cat([r0["advantages"], r1["advantages"]], dim=1), ref["advantages"],
                               rtol=0, atol=TOL)
    for name in ("actor_norm.mean", "actor_norm.var", "critic_norm.mean", "critic_norm.var"):
        torch.testing.assert_close(r0["state"][name], ref["state"][name], rtol=1e-6, atol=1e-6, msg=name)
    assert r0["state"]["actor_norm.count"].item() == ref["state"]["actor_norm.count"].item() == T * WORLD * N
    diff = _max_diff(r0["state"], ref["state"])
    assert diff < TOL, f"2 ranks vs 1 process: max |param diff| {diff:.3g} >= {TOL}"
    assert r0["lr"] == ref["lr"] != PPO_CFG["learning_rate"]  # the adaptive lr moved, identically
    assert r0["stats"]["ppo/approx_kl"] == pytest.approx(ref["stats"]["ppo/approx_kl"], rel=1e-4)
    # The partition matters: the single process's usual minibatches (shards=1) give a different result.
    wrong = _reference(data, shards=1)
    assert _max_diff(wrong["state"], ref["state"]) > 100 * TOL


def test_train_nproc_2_writes_one_run_and_ranks_end_identical(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "robolearn.cli", "train", "panda-reach", "--nproc", "2", "--num-envs", "16",
           "--iterations", "2", "--set", "steps_per_env=8", "--set", "eval.num_envs=4", "--runs-dir", "runs",
           "--name", "dist", "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["dist"]
    run = tmp_path / "runs" / "dist"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["model.pt", "model_2.pt"]
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": 2, "backend": "gloo", "num_envs_per_rank": 16,
                                      "num_envs_total": 32, "max_param_divergence": 0.0}
    assert summary["env_steps"] == 2 * 2 * 16 * 8  # iterations x ranks x envs per rank x steps
    assert "eval" in summary
    assert proc.stdout.count("panda-reach: summary") == 1  # only rank 0 prints
    ckpt = torch.load(run / "checkpoints" / "model.pt", weights_only=False)
    assert ckpt["iteration"] == 2 and ckpt["env_steps"] == 2 * 2 * 16 * 8


def test_launcher_environment_errors(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed() is None  # a plain process: single-process path, no collectives
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="WORLD_SIZE=2 but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        init_distributed()
    with pytest.raises(DistributedError, match="unknown distributed backend 'mpi'"):
        init_distributed("mpi")
    if not torch.cuda.is_available():
        with pytest.raises(DistributedError, match="'nccl' needs CUDA"):
            resolve_backend("nccl", torch.device("cpu"))
    assert resolve_backend("auto", torch.device("cpu")) == "gloo"
    assert resolve_backend("auto", torch.device("cuda")) == "nccl"
    with pytest.raises(ConfigError, match="dist_backend must be auto, gloo or nccl"):
        load_train_cfg("panda-reach", overrides={"dist_backend": "mpi"})
