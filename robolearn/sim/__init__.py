"""Simulation: robot import, scenes, backends, tasks, rendering."""

__all__: list[str] = []
