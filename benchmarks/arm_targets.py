"""How an arm policy bundle reaches targets on the simulated twin through the deploy runtime.

Each trial is one real-time session of `robolearn deploy --auto --cmd x,y,z` on the MuJoCo twin of the arm
(motor-driver PD at the profile's control rate, the policy in onnxruntime on its worker thread, the safety layer's
range clamp, rate limit and trips): stand, run toward the target for `--run` seconds, damp. A trial reaches when
the end effector is within `--tolerance` of the target at the end of Run, with no trip. Targets are drawn
uniformly from the bundle's trained command ranges with a fixed seed.

    python benchmarks/arm_targets.py /tmp/reach/export --trials 50
Writes benchmarks/results/arm_targets_<robot>_<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import numpy as np
from rich.progress import Progress

from robolearn.config import from_dict, merge, to_dict
from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.profile import HardwareProfile, load_profile
from robolearn.deploy.runtime import DeployRuntime
from robolearn.deploy.session import run_session
from robolearn.deploy.transports import make_robot
from robolearn.learn.compare import markdown_table

QUICK = {"stand": {"duration_s": 0.5}, "sim": {"start": "standing"}}


def trial(bundle, profile: HardwareProfile, target: np.ndarray, run_s: float) -> dict:
    rt = DeployRuntime(bundle, profile, make_robot(profile, "sim"))
    try:
        # auto: passive 0.5 s, stand, settle 1 s (already running toward the target), run, 1 s damp
        report = run_session(rt, duration=0.5 + profile.stand.duration_s + 0.2 + 1.0 + run_s + 1.0, auto=True,
                             command=[float(x) for x in target])
    finally:
        rt.close()
        rt.robot.close()
    sim = report.get("sim", {})
    return {"target": [round(float(x), 4) for x in target],
            "distance_m": sim.get("ee_distance_to_command_m", float("nan")),
            "trips": [t["reason"] for t in report["trips"]], "overruns": report["timing"].get("overruns", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", help="bundle folder or shipped bundle name")
    parser.add_argument("--robot", default="panda")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--run", type=float, default=4.0, help="seconds of Run toward each target")
    parser.add_argument("--tolerance", type=float, default=0.01, help="m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    profile = from_dict(HardwareProfile, merge(to_dict(load_profile(args.robot)), QUICK), where="quick start")
    ranges = bundle.manifest.commands
    if not ranges:
        raise SystemExit(f"{args.bundle}: the bundle has no command ranges (not a reach policy?)")
    lo = np.array([c.range[0] for c in ranges])  # deploy.yaml commands: a list of {name, range, ...}
    hi = np.array([c.range[1] for c in ranges])
    rng = np.random.default_rng(args.seed)
    results = []
    with Progress() as bar:
        job = bar.add_task("arm targets", total=args.trials)
        for _ in range(args.trials):
            results.append(trial(bundle, profile, lo + (hi - lo) * rng.random(len(lo)), args.run))
            bar.advance(job)
    d = np.array([r["distance_m"] for r in results])
    reached = [r["distance_m"] <= args.tolerance and not r["trips"] for r in results]
    row = {"bundle": str(args.bundle), "trials": len(results), "reached": int(sum(reached)),
           "tolerance_m": args.tolerance, "trips": sum(len(r["trips"]) for r in results),
           "median_distance_mm": round(float(np.nanmedian(d)) * 1000, 2),
           "p90_distance_mm": round(float(np.nanpercentile(d, 90)) * 1000, 2),
           "max_distance_mm": round(float(np.nanmax(d)) * 1000, 2)}
    stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"arm_targets_{args.robot}_{stamp}"
    payload = {"robot": args.robot, "run_s": args.run, "row": row, "per_trial": results,
               "load_average": os.getloadavg()}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    text = (f"Arm targets on the {args.robot} twin through the deploy runtime, {args.run:g} s of Run each\n\n"
            + markdown_table([row]))
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {out}.json / .md")


if __name__ == "__main__":
    main()
