"""robolearn: robot learning from simulation to real robots."""

import os

# Offscreen rendering needs its GL platform chosen before mujoco is first imported; EGL needs no display.
os.environ.setdefault("MUJOCO_GL", "egl")
# OpenMP's worker threads (torch's intra-op pool) spin while they wait for the next parallel op. libgomp's default
# spin (300k rounds) made training 25x slower with one other busy process on a 2-core machine (panda-reach 26k ->
# 1.0k env steps/s); never spinning (OMP_WAIT_POLICY=PASSIVE) made it 13% slower on idle cores (go2-rough 5.8k ->
# 5.1k: a sleep and a wake-up around every torch op). A short spin keeps both: go2-rough 5.6-5.7k idle, panda-reach
# 9.3k next to a busy process (13k with PASSIVE, 1.0k with the default). Measured 2026-12-07,
# benchmarks/results/train_speed_ab_go2-rough_20261207.md. libgomp reads these when torch first loads, so they must
# be set before that; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

__all__ = ["__version__"]
__version__ = "0.1.0"
