"""`mjx` backend specifics: one-line errors (missing extra, features MJX lacks), exact agreement with `mujoco` in
float64, zero-copy state views, padded small batches, one compiled program per batch size. The float32
conformance with `mujoco` (trajectories, shapes, randomization, auto-reset) is in test_conformance.py; these tests
use the same tasks and batch sizes so that they share its compiled programs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator

import mujoco
import numpy as np
import pytest
import torch

from robolearn.errors import ConfigError
from robolearn.sim.backends import make_backend
from robolearn.sim.tasks import Task, make_task

needs_mjx = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("jax", "mujoco.mjx")),
                               reason="jax / mujoco-mjx not installed (pip install -e '.[mjx]')")
STILL = {"randomization": {"push_interval_s": 0.0}}


def test_missing_jax_is_one_line_naming_the_extra() -> None:
    code = ("import sys; sys.modules['jax'] = None\n"  # as if jax were not installed
            "from robolearn.sim.tasks import make_task\n"
            "from robolearn.errors import ConfigError\n"
            "try:\n    make_task('panda-reach', 1, backend='mjx')\n"
            "except ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == [
        "backend 'mjx' needs JAX and MuJoCo MJX (jax is missing): pip install 'robolearn[mjx]' "
        "(from a checkout: pip install -e '.[mjx]')"]


@needs_mjx
@pytest.mark.parametrize(("xml", "message"), [
    ('<worldbody><geom type="box" size="1 1 .1"/><body pos="0 0 1"><freejoint/>'
     '<geom type="cylinder" size=".1 .2"/></body></worldbody>',
     r"cannot simulate this model: \(mjtGeom.mjGEOM_CYLINDER, mjtGeom.mjGEOM_BOX\) collisions not implemented; "
     r"use backend 'mujoco' or 'mjwarp'"),
    ('<option noslip_iterations="3"/><worldbody><geom type="plane" size="1 1 .1"/></worldbody>',
     "MJX has no noslip solver"),
])
def test_what_mjx_cannot_simulate_is_refused_by_name(xml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_backend("mjx", mujoco.MjModel.from_xml_string(f"<mujoco>{xml}</mujoco>"), 2)


@pytest.fixture
def float64_jax() -> Iterator[None]:
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)


@needs_mjx
@pytest.mark.usefixtures("float64_jax")
def test_float64_matches_mujoco_exactly() -> None:
    """In float64 MJX computes what MuJoCo computes: the Go2 task (per-env friction, mass and motor strength, foot
    contacts, clamped actuators) stays within 1e-9 of `mujoco`, so the float32 tolerances of the conformance suite
    measure rounding only."""
    ref, cand = (make_task("go2-flat", 3, backend=b, seed=5, overrides=STILL) for b in ("mujoco", "mjx"))
    try:
        assert cand.sim.qpos.dtype == torch.float64
        g = torch.Generator().manual_seed(0)
        for _ in range(10):
            actions = torch.randn(3, ref.num_actions, generator=g)  # large enough to saturate some motors
            ref.step(actions)
            cand.step(actions)
            torch.testing.assert_close(cand.sim.qpos, ref.sim.qpos, atol=1e-9, rtol=0)
            torch.testing.assert_close(cand.sim.qvel, ref.sim.qvel, atol=1e-9, rtol=0)
            torch.testing.assert_close(cand.sensors, ref.sensors, atol=1e-7, rtol=1e-9)
    finally:
        ref.close()
        cand.close()


@pytest.fixture(scope="module")
def go2() -> Iterator[Task]:
    task = make_task("go2-flat", 3, backend="mjx", seed=5, overrides=STILL)  # padded to 4 rows, as in conformance
    yield task
    task.close()


@needs_mjx
def test_state_views_are_zero_copy_and_padding_rows_mirror_envs(go2: Task) -> None:
    sim = go2.sim
    sensors = sim.step(go2.action_to_ctrl(torch.zeros(3, 12)))
    assert sensors.shape == (3, 4, go2.model.nsensordata) and sensors.dtype == torch.float64
    qpos, qvel = sim.qpos, sim.qvel
    assert qpos.shape == (3, go2.model.nq) and qpos.dtype == torch.float32 and qvel.dtype == torch.float32
    assert qpos.data_ptr() == sim._data.qpos.unsafe_buffer_pointer()  # a view of the device state, no copy
    rows = np.asarray(sim._data.qpos)
    assert sim.rows == 4 and np.array_equal(rows[3], rows[0])  # row 3 mirrors env 0 (state, parameters, controls)
    moved = qpos.double().clone()
    moved[1, 2] += 0.05
    sim.set_state(torch.tensor([1]), moved[1:2], qvel.double()[1:2])
    assert torch.equal(sim.qpos[[0, 2]], qpos[[0, 2]])  # other envs untouched (qpos is a new view)
    assert sim.qpos[1, 2] == pytest.approx(float(qpos[1, 2]) + 0.05, abs=1e-6)
    torch.testing.assert_close(sim.forward(torch.tensor([2])), sim.forward(torch.arange(3))[2:], atol=1e-5, rtol=1e-6)


@needs_mjx
def test_one_program_for_every_substep_count_forward_and_backend(go2: Task) -> None:
    go2.step(torch.zeros(3, 12))  # compiles the program (or finds it compiled by an earlier test)
    compiled = set(go2.sim.compile_s)
    sensors = go2.sim.step(go2.action_to_ctrl(torch.zeros(3, 12))[:, :2])
    go2.sim.forward(torch.tensor([0, 2]))
    assert sensors.shape == (3, 2, go2.model.nsensordata) and set(go2.sim.compile_s) == compiled
    other = make_backend("mjx", go2.model, 2)  # same model, 1-4 envs: padded to the same 4 rows
    other.step(go2.action_to_ctrl(torch.zeros(3, 12))[:2])
    other.forward(torch.tensor([1]))
    assert not any(key.startswith("advance") for key in other.compile_s), other.compile_s


@needs_mjx
def test_model_fields_per_env_and_refusals(go2: Task) -> None:
    sim, ids = go2.sim, torch.tensor([0, 2])
    gains = np.repeat(go2.model.actuator_gainprm[None], 2, 0)
    gains[:, :, 0] *= np.array([[0.5], [2.0]])
    sim.set_model_field("actuator_gainprm", ids, gains)
    assert sim.model_field("actuator_gainprm", 2)[0, 0] == pytest.approx(2.0 * go2.model.actuator_gainprm[0, 0])
    assert sim.model_field("actuator_gainprm", 1)[0, 0] == pytest.approx(go2.model.actuator_gainprm[0, 0] * float(
        go2.motor_strength[1]), rel=1e-6)  # the task's own draw for env 1, untouched
    with pytest.raises(ConfigError, match="cannot set model field 'geom_size' per env; supported: geom_friction"):
        sim.set_model_field("geom_size", ids, np.repeat(go2.model.geom_size[None], 2, 0))
    with pytest.raises(ValueError, match=r"values must be \[2, 14\]"):
        sim.set_model_field("body_mass", ids, np.ones((2, 3)))


@needs_mjx
def test_many_envs_on_the_cpu_warn() -> None:
    model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><body><freejoint/><geom size=".1"/></body>'
                                           '</worldbody></mujoco>')
    with pytest.warns(UserWarning, match="MJX is slow there and hung at 256 envs"):
        make_backend("mjx", model, 65)
