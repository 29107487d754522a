"""go2-nav policies side by side on the same held-out layouts: success with its 95% (Wilson) interval, time to goal
(over successes), collisions, falls and cost per episode, as a table, JSON, a bar plot and one top-down video per
policy.

Each run is evaluated by `robolearn eval`'s code (deterministic actions, one episode per env) with its own training
config's evaluation settings (held-out layouts: `eval.task_overrides.layout.seed`), the same seeds for every run, so
each policy meets the same layouts, starts and goals. Runs can be a planner + learned follower (go2-nav), the flat
end-to-end baseline (go2-nav with `planner.kind: straight`) or a high level over a frozen skill (go2-nav-skill); on
go2-nav-crouch the success on the layouts with a low ceiling and on those without is reported too.

    python benchmarks/navigation.py runs/nav runs/nav-flat runs/nav-skill --label "planner + follower" \\
        --label "flat PPO" --label "high level + go2-flat skill" --episodes 200 [--num-envs 100] [--video]

A run given as RUN#N is evaluated at its checkpoint of iteration N (e.g. a baseline at the same environment steps).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from robolearn.learn.eval_run import evaluate_run, wilson95

RESULTS = Path(__file__).parent / "results"


def summarize(report: dict, label: str) -> dict:
    episodes = report["per_episode"]
    n = len(episodes)
    won = [e for e in episodes if e["metrics"]["success"] > 0.5]
    low, high = wilson95(len(won), n)
    fell = [e for e in episodes if not e["survived"]]
    return {"policy": label, "run": report["run"], "task": report["task"], "episodes": n,
            "success": len(won) / n, "success_ci95": [round(low, 4), round(high, 4)],
            "time_to_goal_s": (sum(e["metrics"]["time_to_goal_s"] for e in won) / len(won)) if won else None,
            "collision": sum(e["metrics"]["collision"] for e in episodes) / n,
            "collision_ci95": [round(v, 4) for v in wilson95(round(sum(e["metrics"]["collision"]
                                                                        for e in episodes)), n)],
            "failed": len(fell) / n, "cost": sum(e["episode_cost"] for e in episodes) / n,
            **_by_ceiling(episodes)}


def _by_ceiling(episodes: list[dict]) -> dict:
    """Success on the layouts with a low ceiling and on those without (go2-nav-crouch), with 95% intervals."""
    if not episodes or "ceiling" not in episodes[0]["metrics"]:
        return {}
    out = {}
    for key, under in (("with_ceiling", True), ("without_ceiling", False)):
        group = [e for e in episodes if (e["metrics"]["ceiling"] > 0.5) == under]
        won = sum(e["metrics"]["success"] > 0.5 for e in group)
        out[f"success_{key}"] = won / len(group) if group else None
        out[f"success_{key}_ci95"] = [round(v, 4) for v in wilson95(won, len(group))] if group else None
        out[f"episodes_{key}"] = len(group)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = [r["policy"] for r in rows]
    for ax, key, title in ((axes[0], "success", "success (95% interval)"),
                           (axes[1], "collision", "episodes with a collision (95% interval)")):
        values = [r[key] for r in rows]
        errors = [[v - r[f"{key}_ci95"][0] for v, r in zip(values, rows, strict=True)],
                  [r[f"{key}_ci95"][1] - v for v, r in zip(values, rows, strict=True)]]
        ax.bar(labels, values, yerr=errors, capsize=6, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][:len(rows)])
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=15)
    fig.suptitle(f"{rows[0]['task']}, held-out layouts, {rows[0]['episodes']} episodes each")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--num-envs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7000)
    parser.add_argument("--video", action="store_true", help="a top-down video of each policy's first episode")
    args = parser.parse_args()
    labels = args.label or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"give one --label per run ({len(args.runs)} runs, {len(labels)} labels)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for given, label in zip(args.runs, labels, strict=True):
        run, _, at = given.partition("#")
        checkpoint = int(at) if at else None
        video = RESULTS / f"navigation_{Path(run).name}_{stamp}.mp4" if args.video else None

        def first_batch(env, video=video):
            if video is None:
                return None
            from robolearn.learn.hierarchical import HighLevelTask
            from robolearn.sim.render import VideoRecorder

            recorder = VideoRecorder(env.task if isinstance(env, HighLevelTask) else env, video)
            first_batch.recorder = recorder
            if isinstance(env, HighLevelTask):
                env.on_low_step = recorder
                return None
            return recorder

        start = time.perf_counter()
        report, _ = evaluate_run(run, episodes=args.episodes, num_envs=args.num_envs, seed=args.seed,
                                 checkpoint=checkpoint, on_first_batch=first_batch if video else None)
        if video is not None:
            first_batch.recorder.close()
        row = summarize(report, label)
        row["checkpoint"] = checkpoint
        row["wall_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        ttg = f"{row['time_to_goal_s']:.1f} s" if row["time_to_goal_s"] is not None else "-"
        print(f"{label}: success {row['success']:.0%} [{row['success_ci95'][0]:.0%}, {row['success_ci95'][1]:.0%}], "
              f"time to goal {ttg}, collisions {row['collision']:.0%}, failed {row['failed']:.0%}, "
              f"cost {row['cost']:.2f} ({row['wall_s']} s)", flush=True)
        for key in ("with_ceiling", "without_ceiling"):
            if row.get(f"success_{key}") is not None:
                low, high = row[f"success_{key}_ci95"]
                print(f"  {key.replace('_', ' ')}: {row[f'success_{key}']:.0%} [{low:.0%}, {high:.0%}] of "
                      f"{row[f'episodes_{key}']} episodes", flush=True)
    out = RESULTS / f"navigation_{stamp}.json"
    out.write_text(json.dumps(rows, indent=2))
    plot(rows, out.with_suffix(".png"))
    print(f"-> {out}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
