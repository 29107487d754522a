#!/bin/bash
# Diffusion Policy on panda-push from scripted-expert demonstrations, through the CLI as a user runs it:
# record DEMOS expert episodes (skipped when the dataset exists), train with policies/diffusion/panda-push.yaml
# (extra `--set` arguments pass through), then evaluate the run closed loop with each sampler (ddim, warm, ddpm) on
# EPISODES episodes. Prints success with 95% intervals and ms per chunk; the run folder keeps every JSON and a video.
#   benchmarks/diffusion_push.sh [DATASET] [DEMOS] [EPISODES] [--set key=value ...]
#   e.g. benchmarks/diffusion_push.sh datasets/push100 100 100
set -euo pipefail
dataset=${1:-datasets/push100}; demos=${2:-100}; episodes=${3:-100}
shift $(( $# < 3 ? $# : 3 ))
runs=${RUNS_DIR:-runs}
name=push-diffusion-$(date +%Y%m%d-%H%M%S)
if [ ! -f "$dataset/meta/info.json" ]; then
  /usr/bin/time -f "recorded $demos demos in %e s" robolearn record --task panda-push --expert --episodes "$demos" \
    --no-realtime --dataset "$dataset"
fi
/usr/bin/time -f "trained in %e s" robolearn train panda-push --algo diffusion --dataset "$dataset" \
  --runs-dir "$runs" --name "$name" --no-progress --set eval.episodes="$episodes" --set max_episodes="$demos" "$@"
for sampler in ddim warm ddpm; do
  robolearn eval "$runs/$name" --sampler $sampler --episodes "$episodes" \
    --video "$runs/$name/videos/eval_$sampler.mp4" | tail -2
done
python - "$runs/$name" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
s = json.loads((run / "summary.json").read_text())
print(f"{run}: {s['demos']} demos, {s['gradient_steps']} gradient steps in {s['wall_time_s']:.0f} s")
for f in sorted(run.glob("eval_mujoco_*.json")):
    e = json.loads(f.read_text())["summary"]
    print(f"  {e['sampler']:5s} {e['episodes']:4d} episodes: success {e['success']:.2f} {e['success_ci95']}, "
          f"{e['ms_per_chunk']:.1f} ms/chunk (onnxruntime), {e['ms_per_chunk_torch']:.1f} (torch)")
PY
