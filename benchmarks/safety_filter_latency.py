"""What the learned safety filter adds to one control tick: building the observation frame and scoring the
executed action with a Q_risk graph in onnxruntime (one thread), and, when the risk is over the threshold,
scoring the 16 candidates too (threshold 0 here: every tick scores them; none can be under 0, so each
such tick would damp, which costs nothing more).

    python benchmarks/safety_filter_latency.py [--hidden 256 256] [--ticks 5000] [--output benchmarks/results/x]

The critic is an MLP of the given hidden sizes on [observation frame (45), action (12)] of the go2-flat bundle (a
Q_risk of the size the anchors use), with random weights: its cost does not depend on what it learned. Two
cases: `pass` (risk under the threshold: one graph run of batch 1) and `intervene` (threshold 0: every tick also
scores the candidates, one run of batch 16). Prints p50 / p99 / max in ms and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robolearn.config import declarations_root
from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.observations import Measurement, ObservationBuilder
from robolearn.deploy.profile import SafetyFilterCfg
from robolearn.deploy.safety_filter import SafetyFilter
from robolearn.export import ExtraGraph, add_graphs, upgrade_bundle


class Critic(nn.Module):
    def __init__(self, hidden: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 45 + 12
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, 1), nn.Sigmoid())

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--ticks", type=int, default=5000)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copytree(declarations_root() / "policies" / "bundles" / "go2-flat", folder / "v1")
        upgrade_bundle(folder / "v1", folder / "v2")
        torch.manual_seed(0)
        add_graphs(folder / "v2", [ExtraGraph(name="q_risk", role="safety_critic", rate_hz=500.0,
                                              module=Critic(args.hidden),
                                              inputs=[("obs", 45, "observation"), ("action", 12, "action")],
                                              outputs=[("q_risk", 1, "cost_value")])])
        bundle = load_bundle(folder / "v2")
    m = bundle.manifest
    builder = ObservationBuilder(m)
    rng = np.random.default_rng(0)
    results = {}
    for case, threshold in (("pass", 1.0), ("intervene", 0.0)):
        filt = SafetyFilter(bundle.graphs["q_risk"], SafetyFilterCfg(threshold=threshold, impedance_threshold=1.0),
                            frame_dim=m.frame_dim, action_dim=m.policy.action_dim)
        times = []
        for i in range(args.ticks + 200):
            meas = Measurement(q=np.asarray(m.joints.default_pos) + 0.1 * rng.standard_normal(12),
                               dq=rng.standard_normal(12), command=np.array([0.5, 0.0, 0.0]),
                               last_action=0.3 * rng.standard_normal(12), quat=np.array([1.0, 0.0, 0.0, 0.0]),
                               gyro=0.1 * rng.standard_normal(3))
            t0 = time.perf_counter()
            frame = builder.frame(meas)
            decision = filt.decide(frame, meas.last_action, now=i * 0.002)
            filt.gain_scale(i * 0.002)
            dt = time.perf_counter() - t0
            if i >= 200:  # warm-up
                times.append(dt * 1000.0)
            assert case == "intervene" or decision.damp is None  # threshold 0: candidates scored (then damp)
        t = np.asarray(times)
        results[case] = {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
                         "max_ms": float(t.max()), "ticks": len(t), "replaced": filt.log.replaced}
        print(f"{case:9s} p50 {results[case]['p50_ms']:.3f} ms  p99 {results[case]['p99_ms']:.3f} ms  "
              f"max {results[case]['max_ms']:.3f} ms  ({len(t)} ticks, {filt.log.replaced} replaced)")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        cfg = SafetyFilterCfg()
        out = {"hidden": args.hidden, "candidates": cfg.shrink_steps + cfg.random_candidates,
               "machine": platform.processor() or platform.machine(), "results": results}
        args.output.with_suffix(".json").write_text(json.dumps(out, indent=2))
        print(f"wrote {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
