#!/bin/bash
# DSRL on panda-push, as the issue measures it: a deliberately weak diffusion policy (the first 10 demos of DATASET,
# 4,000 gradient steps), evaluated on EPISODES episodes, then steered by DSRL for SECONDS of wall-clock time and
# evaluated again on the same episodes (same seeds). Extra arguments are `--set dsrl.key=value` settings for DSRL.
# Writes benchmarks/results/dsrl_panda-push_<time>.json (both evaluations, the DSRL settings and its sample counts).
#   benchmarks/dsrl_push.sh [DATASET] [SECONDS] [EPISODES] [--set dsrl.key=value ...]
#   e.g. benchmarks/dsrl_push.sh datasets/push100 1200 200 --set dsrl.steer=executed --set dsrl.reward=success
set -euo pipefail
dataset=${1:-datasets/push100}; seconds=${2:-1200}; episodes=${3:-200}
shift $(( $# < 3 ? $# : 3 ))
runs=${RUNS_DIR:-runs}
stamp=$(date +%Y%m%d-%H%M%S)
base=${BASE_RUN:-$runs/push-weak10-$stamp}
if [ ! -f "$dataset/meta/info.json" ]; then
  robolearn record --task panda-push --expert --episodes 100 --no-realtime --dataset "$dataset"
fi
if [ ! -f "$base/checkpoints/model.pt" ]; then
  robolearn train panda-push --algo diffusion --dataset "$dataset" --set max_episodes=10 --iterations 80 \
    --runs-dir "$(dirname "$base")" --name "$(basename "$base")" --no-progress
fi
robolearn eval "$base" --sampler ddim --episodes "$episodes" | tail -2
robolearn finetune "$base" --method dsrl --num-envs 32 --max-time "$seconds" --runs-dir "$runs" \
  --name "$(basename "$base")-dsrl-$stamp" --no-progress --set eval.episodes="$episodes" "$@"
python - "$base" "$runs/$(basename "$base")-dsrl-$stamp" "$stamp" <<'PY'
import json, sys
from pathlib import Path

import yaml
base, steered, stamp = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
b = json.loads((base / "eval_mujoco_ddim.json").read_text())["summary"]
summary = json.loads((steered / "summary.json").read_text())
s = summary["eval"]  # the closing evaluation: EPISODES episodes on the base's evaluation seeds
config = yaml.safe_load((steered / "config.yaml").read_text())
out = {"base_run": str(base), "dsrl_run": str(steered), "base": {k: b[k] for k in ("episodes", "success", "success_ci95")},
       "dsrl": {k: s[k] for k in ("episodes", "success", "success_ci95")}, "dsrl_config": config["dsrl"],
       "transitions": summary["transitions"], "sim_steps": summary["sim_steps"],
       "gradient_steps": summary["gradient_steps"], "wall_time_s": summary["wall_time_s"]}
path = Path("benchmarks/results") / f"dsrl_panda-push_{stamp}.json"
path.write_text(json.dumps(out, indent=1))
print(f"base {b['success']:.2f} {b['success_ci95']} -> DSRL {s['success']:.2f} {s['success_ci95']} "
      f"({summary['transitions']} chunks, {summary['sim_steps']} sim steps, {summary['wall_time_s']:.0f} s): {path}")
PY
