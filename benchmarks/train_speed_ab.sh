#!/bin/bash
# Training speed A/B: `robolearn train TASK --iterations N` at commit REF (a git worktree, PYTHONPATH) and at this
# checkout, alternating, ROUNDS times; prints env steps/s from each run's summary.json. Run on an idle machine.
#   benchmarks/train_speed_ab.sh REF [TASK] [ITERATIONS] [ROUNDS]
#   e.g. benchmarks/train_speed_ab.sh 761d837 go2-rough 12 2
set -euo pipefail
ref=${1:?usage: train_speed_ab.sh REF [TASK] [ITERATIONS] [ROUNDS]}
task=${2:-go2-rough}; iters=${3:-12}; rounds=${4:-2}
here=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
git -C "$here" worktree add --detach "$work/ref" "$ref" >/dev/null
trap 'git -C "$here" worktree remove --force "$work/ref"; rm -rf "$work"' EXIT
for round in $(seq "$rounds"); do
  for side in ref head; do
    if [ $side = ref ]; then dir=$work/ref; pp=$work/ref; else dir=$here; pp=; fi
    (cd "$dir" && PYTHONPATH=$pp python -m robolearn.cli train "$task" --iterations "$iters" --runs-dir "$work/runs" \
      --name "$side-$round" --no-progress --set eval.num_envs=2 > "$work/$side-$round.log" 2>&1)
    python -c "import json, sys; s = json.load(open(sys.argv[1])); print(sys.argv[2], s['steps_per_s'])" \
      "$work/runs/$side-$round/summary.json" "$side $round"
  done
done
