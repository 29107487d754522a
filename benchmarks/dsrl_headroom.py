"""How much a diffusion policy's initial noise can change its success: the same EPISODES scenes (the evaluation's
seeds) run K times, each with its own stream of Gaussian noise, and the fraction of scenes that succeed in at least
one of them (best of k, k = 1..K). DSRL steers the noise per chunk, which can do better than picking one of K whole
streams, but a best-of-K that barely rises says the base policy fails the same scenes whatever noise it draws.

    python benchmarks/dsrl_headroom.py RUN [--streams 8] [--episodes 100]
Writes benchmarks/results/dsrl_headroom_<task>_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from robolearn.learn.checkpoint import load_checkpoint
from robolearn.learn.diffusion_run import evaluate_run, load_diffusion


class NoiseStream(torch.nn.Module):
    """A steering module that ignores the observation and draws N(0, 1) noise from its own generator."""

    def __init__(self, dims: int, seed: int) -> None:
        super().__init__()
        self.dims, self.generator = dims, torch.Generator().manual_seed(seed)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.randn(cond.shape[0], self.dims, generator=self.generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a diffusion run folder or checkpoint")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    ckpt, file = load_checkpoint(args.run, with_path=True)
    dcfg, model = load_diffusion(ckpt, file)
    dims = model.cfg.pred_horizon * model.action_dim
    success: list[list[bool]] = []
    rows = []
    for k in range(args.streams):
        _, episodes = evaluate_run(model, dcfg, episodes=args.episodes, num_envs=min(args.episodes, 100),
                                   sampler="ddim", onnx_latency=False, steer=NoiseStream(dims, 100 + k))
        success.append([bool(e["success"]) for e in episodes])
        table = torch.tensor(success)
        rows.append({"streams": k + 1, "this_stream": table[-1].float().mean().item(),
                     "best_of": table.any(0).float().mean().item()})
        print(f"stream {k + 1}: success {rows[-1]['this_stream']:.2f}, best of {k + 1}: {rows[-1]['best_of']:.2f}",
              flush=True)
    per_scene = torch.tensor(success).float().mean(0)
    out = {"run": str(file), "task": dcfg.task, "episodes": args.episodes, "rows": rows,
           "scenes_never": float((per_scene == 0).float().mean()),
           "scenes_always": float((per_scene == 1).float().mean())}
    path = Path("benchmarks/results") / f"dsrl_headroom_{dcfg.task}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"scenes never solved: {out['scenes_never']:.2f}, always: {out['scenes_always']:.2f} -> {path}")


if __name__ == "__main__":
    main()
