"""Learning curves of `robolearn train gym:<EnvId>` runs (one per seed) against a published reference.

    python benchmarks/gym_curve.py runs/hc-seed0 runs/hc-seed1 runs/hc-seed2 --reference 1500 2500 \
        --reference-label "CleanRL PPO at 1M steps" --output benchmarks/results/gym_halfcheetah

reads each run's TensorBoard log (`episode/raw_return`: the mean raw return of the episodes that ended in an
iteration, stochastic actions) and summary.json (the closing evaluation: deterministic actions, raw return), and
writes <output>.json (per seed: the curve, the return over the last 100k steps, the evaluation; across seeds: mean
and standard deviation) and <output>.png (mean and min-max band over seeds against env steps, the reference band).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np


def _curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    points = sorted({e.step: e.value for e in acc.Scalars("episode/raw_return")}.items())
    return np.array([p[0] for p in points], dtype=float), np.array([p[1] for p in points], dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--reference", nargs=2, type=float, metavar=("LOW", "HIGH"), default=None)
    parser.add_argument("--reference-label", default="reference")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    seeds = []
    for run in args.runs:
        steps, returns = _curve(run)
        summary = json.loads((run / "summary.json").read_text())
        last = returns[steps > steps.max() - 100_000]
        seeds.append({"run": str(run), "task": summary["task"], "env_steps": int(summary["env_steps"]),
                      "wall_time_s": summary["wall_time_s"], "final_100k_return": float(last.mean()),
                      "eval_return": summary.get("eval", {}).get("mean_return"),
                      "curve": {"env_steps": steps.tolist(), "raw_return": returns.tolist()}})
    finals = [s["final_100k_return"] for s in seeds]
    evals = [s["eval_return"] for s in seeds if s["eval_return"] is not None]
    report = {"runs": seeds, "final_100k_return_mean": statistics.mean(finals),
              "final_100k_return_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
              "eval_return_mean": statistics.mean(evals) if evals else None,
              "reference": {"label": args.reference_label, "range": args.reference}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, min(s["curve"]["env_steps"][-1] for s in seeds), 200)
    curves = np.stack([np.interp(grid, s["curve"]["env_steps"], s["curve"]["raw_return"]) for s in seeds])
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    ax.plot(grid / 1e6, curves.mean(0), label=f"robolearn PPO, mean of {len(seeds)} seeds")
    ax.fill_between(grid / 1e6, curves.min(0), curves.max(0), alpha=0.25, label="min-max over seeds")
    if args.reference:
        ax.axhspan(*args.reference, color="gray", alpha=0.2, label=args.reference_label)
    ax.set_xlabel("env steps (M)")
    ax.set_ylabel("episode return (raw)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(f"{seeds[0]['task']}, {len(seeds)} seeds")
    fig.tight_layout()
    fig.savefig(args.output.with_suffix(".png"))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    for s in seeds:
        print(f"{s['run']}: last 100k steps {s['final_100k_return']:.0f}, evaluation {s['eval_return']}")


if __name__ == "__main__":
    main()
