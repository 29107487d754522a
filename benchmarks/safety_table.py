"""Unconstrained PPO, PPO-Lagrangian and PPO + the Q_risk safety filter side by side on the same episodes: return,
success, cost per episode, violating steps per episode and the longest run of violating steps, each with its 95%
interval, as a table, JSON and a bar plot (the safety issue's evaluation table).

    python benchmarks/safety_table.py --ppo runs/wipe-ppo --ppo-lag runs/wipe-lag --filtered runs/wipe-risk \\
        [--threshold 0.5] [--selection closest_safe] [--toward measured] [--impedance-threshold 1] [--episodes 200]
        [--randomization train]

`--filtered` is a run with a safety critic (`robolearn risk RUN`, or a run trained with `safety_critic.enabled`):
its policy runs through the filter exactly as `robolearn eval --safety-filter` runs it, with the run's filter
settings (`safety_critic.filter_*`) unless the options below say otherwise; `--ppo` is evaluated without
it (give the same run twice to see the filter alone). A run given as RUN#N is evaluated at its checkpoint of
iteration N. Every policy meets the same seeds, so the same episodes. The
PPO-Lagrangian row is checked against its run's cost limit (`lagrangian.cost_limit`). Several --threshold values
give one filtered row each (a threshold sweep).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from robolearn.learn.checkpoint import load_checkpoint
from robolearn.learn.eval_run import ci95, evaluate_run, wilson95

RESULTS = Path(__file__).parent / "results"
MEANS = (("return", "episode_return"), ("cost", "episode_cost"), ("violations", "violations"),
         ("longest_violation", "longest_violation"))


def summarize(report: dict, label: str) -> dict:
    episodes = report["per_episode"]
    n = len(episodes)
    row: dict = {"policy": label, "run": report["run"], "task": report["task"], "episodes": n}
    for key, field in MEANS:
        values = [float(e[field]) for e in episodes]
        row[key] = sum(values) / n
        row[f"{key}_ci95"] = ci95(values)
    if episodes and "success" in episodes[0]["metrics"]:
        won = sum(e["metrics"]["success"] > 0.5 for e in episodes)
        row["success"] = won / n
        row["success_ci95"] = [round(v, 4) for v in wilson95(won, n)]
    if "safety_filter" in report:
        row["filter"] = report["safety_filter"]
    return row


def compare(rows: list[dict], limit: float | None) -> dict:
    """The acceptance ratios: violations cut by the filter against PPO, the success it keeps, PPO-Lag's cost vs
    its limit."""
    ppo = next(r for r in rows if r["policy"] == "PPO")
    out: dict = {}
    for r in rows:
        if "filter" in r and ppo["violations"] > 0:
            out[r["policy"]] = {
                "violations_cut": 1.0 - r["violations"] / ppo["violations"],
                "success_kept": (r["success"] / ppo["success"]) if ppo.get("success") else None,
            }
    for lag in (r for r in rows if r["policy"].startswith("PPO-Lagrangian")):
        if limit is not None:
            out[lag["policy"]] = {"cost_limit": limit, "cost": lag["cost"],
                                  "cost_upper95": lag["cost"] + lag["cost_ci95"], "meets_limit": lag["cost"] <= limit,
                                  "success_kept": (lag["success"] / ppo["success"]) if ppo.get("success") else None}
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("success", "success"), ("return", "return"), ("violations", "violating steps per episode"),
            ("longest_violation", "longest violating run (steps)")]
    keys = [(k, t) for k, t in keys if k in rows[0]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 5))
    labels = [r["policy"].replace(" [", "\n[") for r in rows]
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860"]
    for ax, (key, title) in zip(axes, keys, strict=True):
        values = [r[key] for r in rows]
        if key == "success":
            errors = [[v - r["success_ci95"][0] for v, r in zip(values, rows, strict=True)],
                      [r["success_ci95"][1] - v for v, r in zip(values, rows, strict=True)]]
            ax.set_ylim(0, 1)
        else:
            errors = [r[f"{key}_ci95"] for r in rows]
        ax.bar(labels, values, yerr=errors, capsize=6, color=colors[: len(rows)])
        ax.set_title(f"{title} (95% interval)", fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        plt.setp(ax.get_xticklabels(), ha="right")
    fig.suptitle(f"{rows[0]['task']}: {rows[0]['episodes']} episodes each")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ppo", required=True, help="the unconstrained PPO run")
    parser.add_argument("--ppo-lag", action="append", default=[], help="a PPO-Lagrangian run (repeat for several)")
    parser.add_argument("--filtered", action="append", default=[],
                        help="a run with a safety critic: its policy through the safety filter (repeat for several)")
    parser.add_argument("--threshold", type=float, action="append", help="the filter's risk threshold (repeat to "
                                                                         "sweep; default: the run's)")
    parser.add_argument("--selection", help="the filter's candidate rule: lowest_risk or closest_safe (default: "
                                            "the run's)")
    parser.add_argument("--toward", help="where the shrunk candidates head: default (the default pose) or measured "
                                         "(the measured joints); default: the run's")
    parser.add_argument("--shrink-steps", type=int, help="the filter's candidates: the action shrunk in this many "
                                                         "steps (default: the run's)")
    parser.add_argument("--impedance-threshold", type=float, help="the risk above which the filter lowers the "
                                                                  "joint impedance (1: never; default: the run's)")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--num-envs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--randomization", default="train")
    args = parser.parse_args()
    thresholds = args.threshold or [None]
    def name(given: str, several: bool) -> str:
        return f" [{Path(given.partition('#')[0]).name}{'#' + given.partition('#')[2] if '#' in given else ''}]" \
            if several else ""

    runs: list[tuple[str, str, dict | None]] = [("PPO", args.ppo, None)]
    runs += [(f"PPO-Lagrangian{name(r, len(args.ppo_lag) > 1)}", r, None) for r in args.ppo_lag]
    for r in args.filtered:
        runs += [(f"PPO + filter ({t:g}){name(r, len(args.filtered) > 1)}" if len(thresholds) > 1 and t else
                  f"PPO + safety filter{name(r, len(args.filtered) > 1)}", r,
                  {"threshold": t, "selection": args.selection, "shrink_steps": args.shrink_steps,
                   "shrink_toward": args.toward, "impedance_threshold": args.impedance_threshold})
                 for t in thresholds]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for label, given, filt in runs:
        run, _, at = given.partition("#")
        checkpoint = int(at) if at else None
        start = time.perf_counter()
        report, _ = evaluate_run(run, episodes=args.episodes, num_envs=args.num_envs, seed=args.seed,
                                 randomization=args.randomization, safety_filter=filt, checkpoint=checkpoint)
        row = summarize(report, label)
        row["checkpoint"] = checkpoint
        row["wall_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        success = (f"success {row['success']:.0%} [{row['success_ci95'][0]:.0%}, {row['success_ci95'][1]:.0%}], "
                   if "success" in row else "")
        extra = (f", replaced {row['filter']['replaced_fraction']:.1%} of actions" if "filter" in row else "")
        print(f"{label}: {success}return {row['return']:.2f} ± {row['return_ci95']:.2f}, cost {row['cost']:.2f} ± "
              f"{row['cost_ci95']:.2f}, violations {row['violations']:.2f} ± {row['violations_ci95']:.2f}, longest "
              f"run {row['longest_violation']:.2f} ± {row['longest_violation_ci95']:.2f}{extra} ({row['wall_s']} s)",
              flush=True)
    limit = None
    if args.ppo_lag:
        limit = load_checkpoint(args.ppo_lag[0].partition("#")[0])["config"].get("lagrangian", {}).get("cost_limit")
    verdict = compare(rows, limit)
    for key, value in verdict.items():
        print(f"{key}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in value.items()))
    out = RESULTS / f"safety_{rows[0]['task']}_{args.randomization}_{stamp}.json"
    out.write_text(json.dumps({"rows": rows, "acceptance": verdict, "seed": args.seed,
                               "randomization": args.randomization}, indent=2))
    plot(rows, out.with_suffix(".png"))
    print(f"-> {out}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
