"""Why a diffusion policy fails panda-push: the evaluation's scenes run closed loop with every step's block, goal and
end-effector positions traced, and each failed episode sorted by what happened to the block.

    python benchmarks/push_failures.py RUN [--episodes 200] [--sampler ddim] [--execute N]

Classes of a failed episode (block never within `success_distance` of the goal):
  fell       the block left the table
  untouched  the block never moved 1 cm from where it started
  near_miss  it came within 2x success_distance of the goal (pushed close, then stopped or passed)
  wrong_way  it moved, ending farther from the goal than it started
  short      it moved, ended closer than it started, never within 2x success_distance
Writes benchmarks/results/push_failures_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

from robolearn.learn.checkpoint import load_checkpoint
from robolearn.learn.diffusion_run import evaluate_run, load_diffusion
from robolearn.sim.tasks import Task


class Trace:
    """Per-step positions of every env's first episode."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.block: list[torch.Tensor] = []
        self.ee: list[torch.Tensor] = []
        self.alive = torch.ones(task.num_envs, dtype=torch.bool)
        self.alive_steps: list[torch.Tensor] = []

    def __call__(self, task: Task) -> None:
        if not self.block:  # the evaluation resets the task after this trace is made: the goal is read here
            self.goal = task.goal[:, :2].clone()
        self.alive &= task.episode_step != 0  # a reset this step ends the env's first episode
        self.alive_steps.append(self.alive.clone())
        self.block.append(task.block_pos[:, :2].clone())
        self.ee.append(task.ee_pos.clone())


def classify(trace: Trace, episodes: list[dict], success_distance: float, dt: float) -> list[dict]:
    block = torch.stack(trace.block, 1)  # [N, T+1, 2]
    ee = torch.stack(trace.ee, 1)
    alive = torch.stack(trace.alive_steps, 1)
    dist = (block - trace.goal[:, None]).norm(dim=2)
    out = []
    for i, episode in enumerate(episodes):
        ok = episode["success"]
        steps = max(int(alive[i].sum()), 1)  # the last state of an ended episode is not traced
        d = dist[i, :steps]
        moved = float((block[i, :steps] - block[i, 0]).norm(dim=1).max())
        row = {"env_id": i, "success": ok, "start_distance": round(float(d[0]), 4),
               "min_distance": round(float(d.min()), 4), "end_distance": round(float(d[-1]), 4),
               "block_moved": round(moved, 4), "length_s": round(steps * dt, 2)}
        if ok:
            hit = (d < success_distance).nonzero()
            row["first_success_s"] = round(float(hit[0, 0] if len(hit) else steps) * dt, 2)
            row["class"] = "success"
        else:
            # the end effector's travel in the last 2 s: does the policy still act, or has it stopped?
            tail = ee[i, max(steps - int(2 / dt), 0):steps]
            row["ee_travel_last_2s"] = round(float((tail[1:] - tail[:-1]).norm(dim=1).sum()), 4)
            row["ee_height_end"] = round(float(ee[i, steps - 1, 2]), 4)
            if episode["terminated"]:
                row["class"] = "fell"
            elif moved < 0.01:
                row["class"] = "untouched"
            elif d.min() < 2 * success_distance:
                row["class"] = "near_miss"
            elif d[-1] > d[0]:
                row["class"] = "wrong_way"
            else:
                row["class"] = "short"
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a diffusion run folder or checkpoint")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--sampler", default=None, help="ddim | ddpm | warm (default: the run's)")
    parser.add_argument("--execute", type=int, default=0, help="actions executed per plan (default: the run's)")
    args = parser.parse_args()
    ckpt, file = load_checkpoint(args.run, with_path=True)
    dcfg, model = load_diffusion(ckpt, file)
    if args.execute:
        model.cfg.execute = args.execute
    traces: list[Trace] = []

    def first_batch(task: Task) -> Trace:
        traces.append(Trace(task))
        return traces[-1]

    summary, episodes = evaluate_run(model, dcfg, episodes=args.episodes, num_envs=args.episodes,
                                     sampler=args.sampler, onnx_latency=False, on_first_batch=first_batch)
    trace = traces[0]
    rows = classify(trace, episodes, trace.task.cfg.success_distance, trace.task.dt)
    counts = Counter(r["class"] for r in rows)
    failed = [r for r in rows if not r["success"]]
    print(f"success {summary['success']:.3f} {summary['success_ci95']} over {len(rows)} episodes")
    for name, n in counts.most_common():
        print(f"  {name:10s} {n:4d}")
    if failed:
        idle = sum(r["ee_travel_last_2s"] < 0.01 for r in failed)
        print(f"  failed episodes whose end effector moved < 1 cm in the last 2 s: {idle} of {len(failed)}")
    ok = [r["first_success_s"] for r in rows if r["success"]]
    if ok:
        ok.sort()
        print(f"  first success at (s): median {ok[len(ok) // 2]:.2f}, 90th pct {ok[int(0.9 * (len(ok) - 1))]:.2f}")
    out = {"run": str(file), "sampler": summary["sampler"], "execute": model.cfg.execute, "episodes": len(rows),
           "success": summary["success"], "success_ci95": summary["success_ci95"], "classes": dict(counts),
           "episodes_detail": rows}
    path = Path("benchmarks/results") / f"push_failures_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
