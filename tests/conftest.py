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
