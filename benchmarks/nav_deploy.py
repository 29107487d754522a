"""A go2-nav bundle through the deploy runtime on the Go2 twin, scenario after scenario of held-out layouts, at real
time: success (goal within goal_radius) with its 95% (Wilson) interval, time to goal, obstacle contacts, safety
trips and loop timing. This is the robot-side number next to the simulator's (`benchmarks/navigation.py`): the
same policy, run by onnxruntime in the runtime's policy thread, its observations rebuilt from the pose, path and map
by `robolearn.deploy.navigation`, joint PD at 500 Hz in the twin with motor-driver semantics.

    python benchmarks/nav_deploy.py [--bundle go2-nav] [--scenarios 20] [--subgoal planner|path] [--timeout 14]
        [--only-ceilings]

`--subgoal planner`: the bundle's own high level plans to the scenario's goal on the map (A*, replanned at 1 Hz);
`path`: the scenario's planned path is given as a navigation stack would publish it (kept fresh).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from robolearn.config import from_dict, merge, to_dict
from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.navigation import GoalPlanner, NavigationSources
from robolearn.deploy.profile import HardwareProfile, load_profile
from robolearn.deploy.runtime import DeployRuntime, Mode
from robolearn.learn.eval_run import wilson95
from robolearn.twin.navigation import NavTwin, load_scenario

RESULTS = Path(__file__).parent / "results"


def episode(bundle, profile: HardwareProfile, scenario: int, layout_seed: int, subgoal: str, timeout: float) -> dict:
    twin = NavTwin(bundle.manifest.task, 1.0 / profile.control_hz, scenario=scenario, layout_seed=layout_seed,
                   joint_names=profile.joint_names)
    if subgoal == "planner":
        planner = GoalPlanner(bundle.manifest.navigation, lambda: (twin.goal, 0.0), twin.occupancy,
                              twin.base_pose).start()
        path = planner.path
    else:
        def path() -> tuple[np.ndarray, float]:  # a stack republishing its plan: always fresh
            return twin.path, time.monotonic()
    rt = DeployRuntime(bundle, profile, twin, navigation=NavigationSources(pose=twin.base_pose, path=path,
                                                                            grid=twin.occupancy,
                                                                            clearance=twin.clearance))
    try:
        rt.spin(0.02)
        rt.stand()
        rt.spin(profile.stand.duration_s + 0.05)
        rt.run()
        t0 = time.monotonic()
        reached_at = None
        while time.monotonic() - t0 < timeout and rt.mode == Mode.RUN:
            rt.spin(0.1)
            if reached_at is None and twin.goal_distance() < bundle.manifest.navigation.goal_radius_m:
                reached_at = time.monotonic() - t0
        timing = rt.stats.summary()
        return {"scenario": scenario, "ceiling": bool((twin.ceilings[:, 0] < 50).any()),
                "success": reached_at is not None, "time_to_goal_s": reached_at,
                "final_goal_distance_m": twin.goal_distance(), "obstacle_contact_ticks": twin.collisions,
                "trips": [t.reason for t in rt.trips], "overruns": int(timing["overruns"]),
                "period_err_p99_ms": timing["period_err_p99_ms"], "policy_p99_ms": timing.get("policy_p99_ms"),
                "high_level_p99_ms": timing.get("high_level_p99_ms")}
    finally:
        rt.close()
        twin.close()
        if subgoal == "planner":
            planner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="go2-nav")
    parser.add_argument("--robot", default="go2")
    parser.add_argument("--scenarios", type=int, default=20)
    parser.add_argument("--layout-seed", type=int, default=1000, help="held-out layouts (go2-nav evaluates on 1000)")
    parser.add_argument("--subgoal", choices=("planner", "path"), default="planner")
    parser.add_argument("--timeout", type=float, default=14.0, help="seconds of Run per scenario")
    parser.add_argument("--only-ceilings", action="store_true",
                        help="go2-nav-crouch: only the scenarios whose layout has a low ceiling")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    profile = from_dict(HardwareProfile, merge(to_dict(load_profile(args.robot)), {"stand": {"duration_s": 1.0},
                                                                                   "sim": {"start": "standing"}}),
                        where=f"{args.robot} (1 s stand ramp)")
    scenarios = range(args.scenarios)
    if args.only_ceilings:
        task, seed = bundle.manifest.task, args.layout_seed
        with_ceiling = (k for k in range(10_000) if (load_scenario(task, k, seed).ceilings[:, 0] < 50).any())
        scenarios = [next(with_ceiling) for _ in range(args.scenarios)]
    rows = []
    for k in scenarios:
        row = episode(bundle, profile, k, args.layout_seed, args.subgoal, args.timeout)
        rows.append(row)
        print(f"scenario {k:3d}{' (ceiling)' if row['ceiling'] else ''}: {'reached' if row['success'] else 'failed '} "
              f"{row['time_to_goal_s'] or 0:5.1f} s, goal distance {row['final_goal_distance_m']:.2f} m, "
              f"contacts {row['obstacle_contact_ticks']}, trips {row['trips']}", flush=True)
    won = [r for r in rows if r["success"]]
    low, high = wilson95(len(won), len(rows))
    summary = {"bundle": str(bundle.folder), "subgoal": args.subgoal, "layout_seed": args.layout_seed,
               "scenarios": len(rows), "success": len(won) / len(rows), "success_ci95": [low, high],
               "time_to_goal_s": float(np.mean([r["time_to_goal_s"] for r in won])) if won else None,
               "with_obstacle_contact": sum(r["obstacle_contact_ticks"] > 0 for r in rows) / len(rows),
               "trips": sum(bool(r["trips"]) for r in rows), "overruns": sum(r["overruns"] for r in rows),
               "period_err_p99_ms_max": max(r["period_err_p99_ms"] for r in rows),
               "policy_p99_ms_max": max(r["policy_p99_ms"] or 0.0 for r in rows), "per_scenario": rows}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"nav_deploy_{Path(bundle.folder).name}_{args.subgoal}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "per_scenario"}, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
