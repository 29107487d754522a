"""ms per chunk of diffusion runs, DDIM against the warm start, measured back to back: one env (batch 1),
onnxruntime with one thread (the deploy runtime's engine), `--rounds` alternating rounds of `--plans` plans each;
the median of the rounds' medians per sampler and their ratio. Run it on an idle machine.

    python benchmarks/chunk_latency.py RUN [RUN ...] [--rounds 5] [--plans 200]

Writes benchmarks/results/chunk_latency_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from robolearn.learn.checkpoint import load_checkpoint
from robolearn.learn.diffusion import OnnxDenoiser
from robolearn.learn.diffusion_eval import chunk_latency_ms
from robolearn.learn.diffusion_run import load_diffusion

COMPARED = ("ddim", "warm")  # the samplers timed against each other


def measure(run: str, rounds: int, plans: int) -> dict:
    ckpt, file = load_checkpoint(run, with_path=True)
    _, model = load_diffusion(ckpt, file)
    denoiser = OnnxDenoiser(model)
    per_round: dict[str, list[float]] = {s: [] for s in COMPARED}
    for _ in range(rounds):
        for sampler in COMPARED:
            per_round[sampler].append(round(chunk_latency_ms(model, sampler, repeats=plans, denoiser=denoiser), 3))
    ms = {s: statistics.median(v) for s, v in per_round.items()}
    cfg = model.cfg
    return {"run": run, "obs_horizon": cfg.obs_horizon, "pred_horizon": cfg.pred_horizon,
            "ddim_steps": cfg.inference_steps, "warm_steps": cfg.warm_steps, "rounds": per_round,
            "ms_per_chunk": ms, "warm_speedup": round(ms["ddim"] / ms["warm"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plans", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for run in args.runs:
        r = measure(run, args.rounds, args.plans)
        results.append(r)
        print(f"{run}: DDIM {r['ms_per_chunk']['ddim']:.2f} ms, warm {r['ms_per_chunk']['warm']:.2f} ms per chunk "
              f"({r['warm_speedup']:.2f}x)")
    out = Path("benchmarks/results") / f"chunk_latency_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
