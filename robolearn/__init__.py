"""robolearn: robot learning from simulation to real robots."""

import os

# Offscreen rendering needs its GL platform chosen before mujoco is first imported; EGL needs no display.
os.environ.setdefault("MUJOCO_GL", "egl")

__all__ = ["__version__"]
__version__ = "0.1.0"
