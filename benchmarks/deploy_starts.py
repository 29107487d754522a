"""How reliably a policy bundle starts walking on the simulated twin through the deploy runtime.

Each trial is one real-time session of `robolearn deploy --auto` (stand, run at the command, damp) on the MuJoCo
twin: motor-driver PD at the profile's control rate, the policy in onnxruntime on its worker thread. Trials
differ only in thread timing (when the policy's answers land between control ticks), which is what a real
robot's computer adds too; a policy whose start depends on it is fragile. Two start procedures:

- `full`: the profile as shipped (the Go2 lies down, 2 s stand ramp), the real-robot procedure;
- `quick`: standing start, 0.1 s ramp (what the fast deploy tests use).

A trial "walks" when the mean forward speed over the run phase is within 40% of the command.

    python benchmarks/deploy_starts.py go2-flat go2-rough-rma --trials 10
Writes benchmarks/results/deploy_starts_<robot>_<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

from rich.progress import Progress

from robolearn.config import from_dict, merge, to_dict
from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.profile import HardwareProfile, load_profile
from robolearn.deploy.runtime import DeployRuntime
from robolearn.deploy.session import make_robot, run_session
from robolearn.learn.compare import markdown_table

PROCEDURES = {"full": {}, "quick": {"stand": {"duration_s": 0.1}, "sim": {"start": "standing"}}}


def trial(bundle, profile: HardwareProfile, duration: float, speed: float) -> dict:
    rt = DeployRuntime(bundle, profile, make_robot(profile, "sim"))
    try:
        report = run_session(rt, duration=duration, auto=True, command=[speed, 0.0, 0.0])
    finally:
        rt.close()
        rt.robot.close()
    v = report.get("sim", {}).get("walk_mean_speed_m_s", 0.0)
    return {"speed_m_s": v, "walked": abs(v - speed) <= 0.4 * speed, "trips": [t["reason"] for t in report["trips"]],
            "overruns": report["timing"].get("overruns", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundles", nargs="+", help="bundle folders or shipped bundle names")
    parser.add_argument("--robot", default="go2")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--speed", type=float, default=0.5, help="forward command, m/s")
    parser.add_argument("--procedure", action="append", choices=list(PROCEDURES), help="default: both")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    base = load_profile(args.robot)
    procedures = args.procedure or list(PROCEDURES)
    rows, trials = [], {}
    with Progress() as bar:
        job = bar.add_task("deploy trials", total=len(args.bundles) * len(procedures) * args.trials)
        for name in args.bundles:
            bundle = load_bundle(name)
            for proc in procedures:
                profile = from_dict(HardwareProfile, merge(to_dict(base), PROCEDURES[proc]), where=proc)
                duration = 6.0 + (profile.stand.duration_s if proc == "full" else 0.0)
                results = []
                for _ in range(args.trials):
                    results.append(trial(bundle, profile, duration, args.speed))
                    bar.advance(job)
                trials[f"{name}/{proc}"] = results
                speeds = [r["speed_m_s"] for r in results]
                rows.append({"bundle": name, "history": bundle.manifest.policy.history, "procedure": proc,
                             "walked": sum(r["walked"] for r in results), "trials": len(results),
                             "mean_speed_m_s": round(sum(speeds) / len(speeds), 3),
                             "min_speed_m_s": round(min(speeds), 3), "max_speed_m_s": round(max(speeds), 3),
                             "trips": sum(len(r["trips"]) for r in results)})
    stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"deploy_starts_{args.robot}_{stamp}"
    payload = {"robot": args.robot, "command_m_s": args.speed, "trials": args.trials, "rows": rows,
               "per_trial": trials, "load_average": os.getloadavg()}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    text = (f"Deploy starts on the {args.robot} twin, command {args.speed} m/s, {args.trials} trials each\n\n"
            + markdown_table(rows))
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {out}.json / .md")


if __name__ == "__main__":
    main()
