"""Kept beside pyproject.toml so that `colcon build` (ament_python) can build the repo as a ROS 2 package.

pip reads pyproject.toml; colcon runs this file. Declaration folders and launch files are installed as
data under share/robolearn, where robolearn looks for them when it is not run from the source tree.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent


def tree(folder: str) -> list[tuple[str, list[str]]]:
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(ROOT)
            out.setdefault(f"share/robolearn/{rel.parent}", []).append(str(rel))
    return list(out.items())


setup(
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/robolearn"]),
        ("share/robolearn", ["package.xml"]),
        *tree("launch"),
        *tree("sim"),
        *tree("hardware"),
        *tree("policies"),
    ],
)
