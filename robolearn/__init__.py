"""robolearn: robot learning from simulation to real robots."""

import os

# Offscreen rendering needs its GL platform chosen before mujoco is first imported; EGL needs no display.
os.environ.setdefault("MUJOCO_GL", "egl")
# OpenMP's worker threads (torch's intra-op pool) spin while they wait by default: with one other busy process on
# a 2-core machine, training then ran 25x slower (panda-reach 26k -> 1.0k env steps/s; 17.6k with PASSIVE, measured
# 2026-12-05). Read by libgomp when torch first loads, so it must be set before that; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["__version__"]
__version__ = "0.1.0"
