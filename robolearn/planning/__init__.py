"""Planning on 2-D occupancy grids (numpy only), shared by the training scenes (`sim`) and the robot (`deploy`):
the grid, A*, shortcutting and resampling (`robolearn.planning.grid`)."""

from robolearn.planning.grid import OccupancyGrid, nearest_free, plan_path, resample, shortcut

__all__ = ["OccupancyGrid", "nearest_free", "plan_path", "resample", "shortcut"]
