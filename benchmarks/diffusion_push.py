"""Diffusion Policy on panda-push from scripted-expert demonstrations, trained and evaluated closed loop (state inputs).

    robolearn record --task panda-push --expert --episodes 100 --no-realtime --dataset /tmp/push100
    python benchmarks/diffusion_push.py /tmp/push100 --steps 3000 --episodes 100

Trains `DiffusionLearner` for --steps gradient steps (progress bar), then runs the EMA policy on --episodes fresh
panda-push episodes in parallel (receding horizon: plan on the last 2 frames, execute 8 actions, DDIM
--inference-steps). An episode succeeds when the block reaches the goal before the episode ends. Writes
benchmarks/results/diffusion_push_<time>.json with the success rate and its 95% Wilson interval, training time,
loss curve and ms per chunk.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from robolearn.learn.demonstrations import load_demonstrations
from robolearn.learn.diffusion import ChunkWindows, DiffusionCfg, DiffusionLearner, DiffusionModel
from robolearn.sim.tasks import make_task

OBS_KEYS = ("observation.state", "observation.ee_pos", "observation.environment_state")


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def frame(task) -> torch.Tensor:
    """The dataset's observation (OBS_KEYS side by side) of every env, as `recording_frame` writes it."""
    return torch.cat([task.joint_pos, task.ee_pos, task.block_pos, task.block_quat, task.goal], dim=1).float()


@torch.no_grad()
def evaluate(model: DiffusionModel, episodes: int, seed: int, inference_steps: int) -> dict:
    cfg = model.cfg
    task = make_task("panda-push", episodes, seed=seed)
    task.reset()
    history = frame(task).unsqueeze(1).repeat(1, cfg.obs_horizon, 1)
    success = torch.zeros(episodes, dtype=torch.bool)
    running = torch.ones(episodes, dtype=torch.bool)
    chunk, k, plan_ms = None, cfg.execute, []
    generator = torch.Generator().manual_seed(seed)
    for _ in range(task.max_episode_steps):
        if k == cfg.execute:
            t0 = time.perf_counter()
            chunk = model.sample(history, steps=inference_steps, generator=generator)[:, cfg.obs_horizon - 1:]
            plan_ms.append((time.perf_counter() - t0) * 1e3 / episodes)
            k = 0
        _, _, _, terminated, truncated, _ = task.step(chunk[:, k])
        k += 1
        success |= running & task.success()
        running &= ~(terminated | truncated)
        history = torch.cat((history[:, 1:], frame(task).unsqueeze(1)), dim=1)
        if not running.any():
            break
    task.close()
    n_ok = int(success.sum())
    low, high = wilson(n_ok, episodes)
    return {"episodes": episodes, "success": n_ok / episodes, "success_95": [round(low, 3), round(high, 3)],
            "ms_per_chunk_batched_per_env": round(float(np.median(plan_ms)), 3)}


@torch.no_grad()
def chunk_latency(model: DiffusionModel, inference_steps: int, reps: int = 30) -> float:
    obs = torch.zeros(1, model.cfg.obs_horizon, model.obs_dim)
    for _ in range(3):
        model.sample(obs, steps=inference_steps)
    t0 = time.perf_counter()
    for _ in range(reps):
        model.sample(obs, steps=inference_steps)
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--demos", type=int, default=None, help="use the first N episodes (default all)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--inference-steps", type=int, default=10)
    ap.add_argument("--down-dims", type=int, nargs="+", default=[64, 128, 256], help="U-Net widths per level")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    demos = load_demonstrations(args.dataset, task="panda-push", obs_keys=OBS_KEYS, max_episodes=args.demos)
    cfg = DiffusionCfg(batch_size=args.batch_size, learning_rate=args.learning_rate, total_steps=args.steps,
                       warmup_steps=min(500, args.steps // 10), inference_steps=args.inference_steps,
                       down_dims=args.down_dims)
    model = DiffusionModel(cfg, demos.obs_dim, demos.action_dim, demos.obs_norm, demos.action_norm)
    learner = DiffusionLearner(model, ChunkWindows(demos.episodes, cfg.obs_horizon, cfg.pred_horizon),
                               generator=torch.Generator().manual_seed(args.seed + 1))
    losses = []
    start = time.perf_counter()
    columns = [TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
               TextColumn("{task.fields[rate]:.1f} it/s"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn()]
    with Progress(*columns) as bar:
        job = bar.add_task("train", total=args.steps, loss=float("nan"), rate=0.0)
        window = []
        for step in range(args.steps):
            window.append(learner.step())
            if (step + 1) % 50 == 0:
                losses.append([step + 1, float(np.mean(window))])
                window = []
                bar.update(job, completed=step + 1, loss=losses[-1][1],
                           rate=(step + 1) / (time.perf_counter() - start))
    train_s = time.perf_counter() - start
    ema = learner.ema_model.eval()
    result = {
        "dataset": str(args.dataset), "demos": len(demos.episodes), "frames": demos.frames,
        "held_action_dims": demos.action_norm.constant_dims, "config": vars(cfg),
        "steps": args.steps, "train_s": round(train_s, 1), "loss_curve": losses,
        "ms_per_chunk_single": round(chunk_latency(ema, args.inference_steps), 2),
        "eval": evaluate(ema, args.episodes, seed=args.seed + 1000, inference_steps=args.inference_steps),
        "torch_threads": torch.get_num_threads(),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"diffusion_push_{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("loss_curve", "config")}, indent=1))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
