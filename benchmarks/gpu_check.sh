#!/usr/bin/env bash
# The one-shot GPU check, run on the device machine (one NVIDIA H200) in two calls, part a then part b at once
# (the kit is split because one call carries at most 64 MiB; see benchmarks/gpu_kit.sh, which builds .gpukit/):
#
#   device run, carry [".gpukit/a"]:  bash benchmarks/gpu_check.sh a 150
#   device run, carry [".gpukit/b"]:  bash benchmarks/gpu_check.sh b 500     (within ~30 s, on the warm machine)
#
# The number is the part's deadline in seconds: stages are cut to fit it and skipped when it has passed, and
# results are packed after every stage, so a part that runs out of time still returns what it measured.
#   part a: installs MuJoCo, MJX and the Go2 model; GPU and library versions; `robolearn bench` of go2-flat on
#           `mjx` (4096-16384 envs, raw physics alongside); torch's host-sync count on CUDA (gpu_sync_check.py).
#   part b: adds MuJoCo Warp (warp.so from both parts); trains go2-flat with the config's `gpu` section (mjwarp,
#           4096 envs) under a 240 s budget, with the run's closing evaluation (100 episodes: survival, velocity
#           error); the same bench and sync count on `mjwarp`; a play mp4 of the trained policy (MuJoCo on the
#           CPU, EGL); the conformance suite's CUDA tests if time is left.
# Everything lands in $OUT: gpu_check_<part>.log, results_<part>.tar.gz (JSON, markdown, plots, run folder) and
# the headline files (bench tables, summary.json, play.mp4).
set -uo pipefail  # no -e: a failing stage is logged and the next one runs
cd "$(dirname "$0")/.."
PART=${1:?usage: gpu_check.sh a|b [deadline_s] [stage,stage,...]}
DEADLINE=${2:-500}
ONLY=${3:-}  # run only these stages (e.g. install,bench_mjwarp for a quick re-measurement); default all
RESERVE=15  # seconds kept for packing the results
OUT=${OUT:-/tmp/gpu_check_out}
SITE=/tmp/robolearn_site  # carried packages, installed here (PYTHONPATH)
STATE=/tmp/robolearn_gpukit  # what part a leaves for part b on the same machine
WORK=/tmp/gc_$PART
mkdir -p "$OUT" "$SITE" "$STATE" "$WORK"
exec > >(tee -a "$OUT/gpu_check_$PART.log") 2>&1
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl PYTHONPATH="$PWD:$SITE" XLA_PYTHON_CLIENT_PREALLOCATE=false
export PY=python3 SITE STATE WORK
# DRY_RUN=1 checks this script on a machine without a GPU (the installed packages, the CPU, a few envs).
export DRY_RUN=${DRY_RUN:-0} DEVICE=cuda
SYNC_ENVS=4096
TRAIN_ARGS=()
if ((DRY_RUN)); then
  DEVICE=cpu SYNC_ENVS=16 TRAIN_ARGS=(--backend mjwarp --num-envs 32 --set eval.num_envs=4
    --set task_overrides.episode_length_s=2)
fi

pack() { tar -C "$WORK" --exclude='model_*.pt' -czf "$OUT/results_$PART.tar.gz" . 2>/dev/null; }  # final model.pt only
stage() {  # stage NAME SECONDS CMD...: CMD (a command or an exported function) under `timeout` of at most
  #          SECONDS and of what the deadline leaves
  local name=$1 budget=$2 avail t0 rc
  shift 2
  if [[ -n $ONLY && ",$ONLY," != *",$name,"* ]]; then return 0; fi
  avail=$((DEADLINE - SECONDS - RESERVE))
  if ((avail < 10)); then
    echo "== $name: skipped, the deadline has passed"; echo "$name skipped" >>"$WORK/stages.txt"; return 0
  fi
  ((budget > avail)) && budget=$avail
  echo "== $name (at most ${budget} s; ${SECONDS} s into part $PART)"
  t0=$SECONDS
  timeout --kill-after=5 "$budget" bash -c '"$@"' _ "$@"
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  echo "$name exit=$rc seconds=$((SECONDS - t0))" >>"$WORK/stages.txt"
  pack
  return 0
}
install_wheels() { "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@"; }
bench() {  # bench BACKEND SWEEP_SECONDS [ENVS...]: go2-flat env steps/s and raw physics on CUDA
  local backend=$1 seconds=$2 sizes counts=() n
  shift 2
  sizes=("$@")
  ((${#sizes[@]})) || sizes=(1024 4096 8192 16384)
  ((DRY_RUN)) && sizes=(16 32)
  for n in "${sizes[@]}"; do counts+=(--num-envs "$n"); done
  "$PY" -m robolearn.cli bench --task go2-flat --backend "$backend" --device "$DEVICE" "${counts[@]}" --steps 60 \
    --max-seconds 150 --max-total-seconds "$seconds" --output "$WORK/bench" --tag "h200-$backend" --no-progress
}
export -f install_wheels bench

if [[ $PART == a ]]; then
  install_a() {
    cp .gpukit/a/warp.so.xz.part0 "$STATE/" &&
      install_wheels .gpukit/a/*.whl &&
      tar -C "$SITE" -xJf .gpukit/a/robot_data.tar.xz
  }
  versions() {
    { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
      "$PY" -c "import sys, torch, jax, numpy, mujoco; from mujoco import mjx; print('python', sys.version.split()[0], \
'| torch', torch.__version__, torch.cuda.get_device_name(0), '| jax', jax.__version__, jax.devices(), \
'| numpy', numpy.__version__, '| mujoco', mujoco.__version__)"; } | tee "$WORK/versions.txt"
  }
  export -f install_a versions
  ((DRY_RUN)) || stage install 60 install_a
  stage versions 30 versions
  stage bench_mjx 130 bench mjx 100 4096 8192 16384
  stage sync_mjx 40 "$PY" benchmarks/gpu_sync_check.py --backend mjx --num-envs "$SYNC_ENVS" --device "$DEVICE" \
    --output "$WORK/sync_mjx.json"
  cp -r "$WORK/bench" "$STATE/bench_a" 2>/dev/null
  cp "$WORK"/bench/*.md "$OUT/" 2>/dev/null
  pack
  echo "part a done in ${SECONDS} s"
  exit 0
fi

[[ $PART == b ]] || { echo "unknown part $PART (a or b)"; exit 2; }
if ((!DRY_RUN)) && [[ ! -f $STATE/warp.so.xz.part0 || ! -d $SITE/mujoco ]]; then
  echo "part a's files are not on this machine (it was given back between the calls): run part a, then b at once"
  exit 3
fi
install_b() {
  tar -C "$SITE" -xJf .gpukit/b/warp_lite.tar.xz &&
    cat "$STATE/warp.so.xz.part0" .gpukit/b/warp.so.xz.part1 | xz -d >"$SITE/warp/bin/warp.so" &&
    echo "$(cat .gpukit/b/warp.so.sha256)  $SITE/warp/bin/warp.so" | sha256sum -c - &&
    install_wheels .gpukit/b/*.whl || return 1
  if ! ldconfig -p | grep -q 'libEGL.so.1'; then  # EGL loaders for MUJOCO_GL=egl (the play video)
    for deb in .gpukit/b/gl/*.deb; do dpkg -x "$deb" /; done
    ldconfig
  fi
  "$PY" -c "import warp as wp; wp.config.log_level = wp.LOG_WARNING; wp.init(); print('warp', wp.__version__, \
[str(d) for d in wp.get_devices()])" | tee -a "$WORK/versions.txt"
}
export -f install_b
((DRY_RUN)) || stage install 60 install_b
# Training comes first (the headline), on the config's GPU backend (mjwarp); its start-up compiles Warp's kernels.
TRAIN_S=$((DEADLINE - SECONDS - RESERVE - 200))  # kept: compilation, the closing evaluation, the bench
((TRAIN_S > 240)) && TRAIN_S=240
((DRY_RUN)) && TRAIN_S=10
command -v nvidia-smi >/dev/null && { nvidia-smi dmon -s um -d 5 >"$WORK/gpu_utilization.txt" 2>&1 & DMON=$!; }
stage train $((TRAIN_S + 160)) "$PY" -m robolearn.cli train go2-flat --device "$DEVICE" --max-time "$TRAIN_S" \
  --runs-dir "$WORK/runs" --name go2-flat-gpu "${TRAIN_ARGS[@]}"
[[ -n ${DMON:-} ]] && kill "$DMON" 2>/dev/null
RUN="$WORK/runs/go2-flat-gpu"
cp "$RUN/summary.json" "$OUT/summary.json" 2>/dev/null
stage bench_mjwarp 110 bench mjwarp 80
cp "$WORK"/bench/*.md "$OUT/" 2>/dev/null
stage sync_mjwarp 40 "$PY" benchmarks/gpu_sync_check.py --backend mjwarp --num-envs "$SYNC_ENVS" --device "$DEVICE" \
  --output "$WORK/sync_mjwarp.json"
stage play 45 "$PY" -m robolearn.cli play "$RUN" --episodes 1 --backend mujoco --device cpu \
  --output "$WORK/play.mp4"
cp "$WORK/play.mp4" "$OUT/" 2>/dev/null
stage conformance 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_conformance.py -k cuda
pack
echo "part b done in ${SECONDS} s"
