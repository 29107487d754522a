"""Robot import: URDF to MuJoCo, and robot declarations."""

__all__: list[str] = []
