"""Shared fixtures. Tests use real MuJoCo, real files and real subprocesses; nothing is mocked."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def go2_task():
    from robolearn.sim.tasks import make_task

    task = make_task("go2-flat", 8, seed=3)
    yield task
    task.close()


@pytest.fixture
def reach_task():
    from robolearn.sim.tasks import make_task

    task = make_task("panda-reach", 8, seed=3)
    yield task
    task.close()


@pytest.fixture(scope="session")
def pushes(tmp_path_factory):
    """Two scripted-expert panda-push episodes, recorded through the CLI in a subprocess (the diffusion tests)."""
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path_factory.mktemp("demos") / "push"
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "robolearn.cli", "record", "--task", "panda-push", "--expert",
                          "--episodes", "2", "--no-realtime", "--dataset", str(root), "--seed", "5"],
                         capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    return root
