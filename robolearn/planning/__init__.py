"""Planning on 2-D occupancy grids (numpy only), shared by the training scenes (`sim`) and the robot (`deploy`):
the occupancy grid, overhead clearance, A*, shortcutting and resampling (`robolearn.planning.grid`)."""

from robolearn.planning.grid import (
    ClearanceGrid,
    OccupancyGrid,
    nearest_free,
    plan_path,
    plan_to_goal,
    resample,
    shortcut,
)

__all__ = ["ClearanceGrid", "OccupancyGrid", "nearest_free", "plan_path", "plan_to_goal", "resample", "shortcut"]
