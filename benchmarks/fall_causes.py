"""Which randomized parameters go with falls: a legged run evaluated on one batch of episodes, each env's friction,
added mass, motor strength and terrain level read at its first step, and the fall rate per quartile of each
(the safety issue's question of what a filter could prevent on go2-rough).

    python benchmarks/fall_causes.py runs/go2-rough-teacher [--randomization wide] [--episodes 1000]

Writes benchmarks/results/fall_causes_<task>_<randomization>_<stamp>.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from robolearn.learn.eval_run import evaluate_run

PARAMETERS = ("friction", "added_mass", "motor_strength", "terrain_level")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--randomization", default="wide")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    drawn: dict[str, np.ndarray] = {}

    def first_batch(task):  # each env's first episode counts: its parameters as drawn at the start
        def on_step(t) -> None:
            if not drawn:
                drawn.update({k: getattr(t, k).detach().float().cpu().numpy() for k in PARAMETERS
                              if isinstance(getattr(t, k, None), torch.Tensor)})
        return on_step

    report, results = evaluate_run(args.run, randomization=args.randomization, episodes=args.episodes,
                                   num_envs=args.episodes, seed=args.seed, on_first_batch=first_batch)
    fell = np.array([not r.survived for r in results])
    out: dict = {"run": args.run, "task": report["task"], "randomization": args.randomization,
                 "episodes": len(results), "seed": report["seed"], "falls": float(fell.mean()), "quartiles": {}}
    print(f"{report['task']}, {args.randomization} ranges, {len(results)} episodes: falls {fell.mean():.1%}")
    for name, values in drawn.items():
        edges = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
        bins = np.searchsorted(edges[1:-1], values, side="right")  # quartile 0..3
        rows = [{"range": [float(edges[b]), float(edges[b + 1])], "episodes": int((bins == b).sum()),
                 "falls": float(fell[bins == b].mean()) if (bins == b).any() else None} for b in range(4)]
        out["quartiles"][name] = rows
        print(f"  {name:15s} " + "  ".join(f"[{r['range'][0]:.2f}, {r['range'][1]:.2f}]: {r['falls']:.1%} of "
                                           f"{r['episodes']}" for r in rows if r["falls"] is not None))
    path = Path(__file__).parent / "results" / (f"fall_causes_{report['task']}_{args.randomization}_"
                                                f"{time.strftime('%Y%m%d-%H%M%S')}.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
