"""Backend conformance: every backend in CANDIDATES against `mujoco` (the reference), run on the CPU with 2-4 envs.

From the same seed (so the same initial states, commands and randomization draws) and the same action sequence,
a candidate must give `mujoco`'s qpos/qvel trajectory, sensors, observations and rewards within its stated
tolerances over a short horizon, with the same shapes and named policy terms; per-env friction, mass and gains
must reach its physics (they change the motion exactly as on `mujoco`), and auto-reset must restart the same envs
in the same states. A GPU backend adds one `Candidate` line here; a missing extra skips its tests (the reason
names the extra; CI installs them through `.[test]`).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from robolearn.errors import ConfigError
from robolearn.sim.backends import make_backend
from robolearn.sim.tasks import Task, make_task


@dataclass(frozen=True)
class Candidate:
    backend: str
    modules: tuple[str, ...]  # importable modules the backend needs
    extra: str  # pip extra that installs them
    qpos_atol: float  # m / rad
    qvel_atol: float  # m/s / rad/s
    sensor_atol: float  # in the sensors' own units (touch N, frame m and m/s, actuator N m) ...
    sensor_rtol: float  # ... plus this fraction of the value (touch forces are tens of N)
    obs_atol: float  # observations and rewards (scaled quantities)
    why: str  # where the tolerance comes from


MJWARP = Candidate(
    "mjwarp", ("warp", "mujoco_warp"), "mjwarp",
    qpos_atol=1e-4, qvel_atol=2e-3, sensor_atol=1e-2, sensor_rtol=1e-3, obs_atol=2e-3,
    why="MJWarp runs MuJoCo's algorithms (same Newton solver, implicitfast, primitive contacts) in float32 where "
        "MuJoCo uses float64: rounding at ~1e-7 relative grows through the contact solve to 5e-7 in qpos and "
        "1.3e-5 in qvel over 40 physics steps (observed: Go2 stepping with random actions, Panda 5e-7 / 5e-6; "
        "touch sensors 5e-4 N of ~20-60 N). The tolerances are 20x (sensors) to 200x that and far below any real "
        "difference: a 3 kg base mass, a 0.5x motor or a 0.2 friction changes qpos by 0.07-0.4 over the same "
        "horizon (test_per_env_randomization_reaches_the_physics).",
)
MJX = Candidate(
    "mjx", ("jax", "mujoco.mjx"), "mjx",
    qpos_atol=2e-4, qvel_atol=6e-3, sensor_atol=5e-2, sensor_rtol=2e-3, obs_atol=2e-3,
    why="MJX runs MuJoCo's algorithms: in float64 (jax_enable_x64) it matches MuJoCo to 1e-15 in qpos, 5e-14 in "
        "qvel and 2e-12 in sensors over these tests (test_mjx.py checks 1e-9). In float32, its GPU precision, "
        "rounding grows through the Go2's landing and foot contacts to 4.7e-5 in qpos, 1.4e-3 in qvel and 0.04 N in "
        "touch forces of 10-90 N (observed; Panda 7e-7 / 5e-6). The tolerances are ~4x that, and 100x below the "
        "randomization effects (0.07-0.4 in qpos).",
)
CANDIDATES: list[Candidate] = [MJWARP, MJX]

HORIZON = 10  # policy steps = 40 physics steps (decimation 4) for both tasks
STILL = {"randomization": {"push_interval_s": 0.0}}


def _param(c: Candidate) -> Any:
    missing = [m for m in c.modules if importlib.util.find_spec(m) is None]
    marks = [pytest.mark.skip(reason=f"backend {c.backend!r}: {', '.join(missing)} not installed "
                                     f"(pip install -e '.[{c.extra}]')")] if missing else []
    return pytest.param(c, id=c.backend, marks=marks)


PARAMS = [_param(c) for c in CANDIDATES]
RANDOMIZED = ("geom_friction", "body_mass", "actuator_gainprm", "actuator_biasprm", "actuator_forcerange")
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (the GPU backends' device path; run on a GPU machine)"))]


def _pair(task: str, n: int, c: Candidate, seed: int = 5, overrides: dict | None = None) -> tuple[Task, Task]:
    ref = make_task(task, n, backend="mujoco", seed=seed, overrides=overrides)
    return ref, make_task(task, n, backend=c.backend, seed=seed, overrides=overrides)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).abs().max())


def _close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    got, want = got.double().cpu(), want.double().cpu()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != mujoco's {tuple(want.shape)}"
    excess = (got - want).abs() - (atol + rtol * want.abs())
    assert excess.max() <= 0, f"{name}: max error {_err(got, want):.3g} beyond atol {atol:g} + rtol {rtol:g}"


@pytest.mark.parametrize("c", PARAMS)
@pytest.mark.parametrize("task_name", ["go2-flat", "panda-reach"])
def test_same_trajectory_as_mujoco(task_name: str, c: Candidate) -> None:
    """Same seed, same actions: qpos/qvel, every substep's sensors, observations and rewards agree at every policy
    step. The Go2 envs carry different random friction, base mass and motor strength, so this also checks that
    per-env randomization reaches the candidate's physics."""
    ref, cand = _pair(task_name, 3, c, overrides=STILL if task_name == "go2-flat" else None)
    try:
        _close("initial qpos", cand.sim.qpos, ref.sim.qpos, c.qpos_atol)
        g = torch.Generator().manual_seed(0)
        for step in range(HORIZON):
            actions = 0.5 * torch.randn(3, ref.num_actions, generator=g)
            obs_r, rew_r, _, term_r, trunc_r, _ = ref.step(actions)
            obs_c, rew_c, _, term_c, trunc_c, _ = cand.step(actions)
            at = f"{task_name} step {step}"
            _close(f"{at} qpos", cand.sim.qpos, ref.sim.qpos, c.qpos_atol)
            _close(f"{at} qvel", cand.sim.qvel, ref.sim.qvel, c.qvel_atol)
            _close(f"{at} sensors", cand.sensors, ref.sensors, c.sensor_atol, c.sensor_rtol)
            for group in obs_r:
                _close(f"{at} obs[{group}]", obs_c[group], obs_r[group], c.obs_atol)
            _close(f"{at} reward", rew_c, rew_r, c.obs_atol)
            assert torch.equal(term_c, term_r) and torch.equal(trunc_c, trunc_r), at
        assert not term_r.any(), "the horizon should be free of falls (resets are tested separately)"
    finally:
        ref.close()
        cand.close()


@pytest.mark.parametrize("c", PARAMS)
@pytest.mark.parametrize("task_name", ["go2-flat", "panda-reach"])
def test_same_shapes_dtypes_and_policy_terms(task_name: str, c: Candidate) -> None:
    ref, cand = _pair(task_name, 2, c)
    try:
        assert cand.policy_obs_layout() == ref.policy_obs_layout()
        assert cand.obs_dims == ref.obs_dims
        assert [name for name, *_ in cand.policy_terms()] == [name for name, *_ in ref.policy_terms()]
        assert cand.sim.qpos.shape == ref.sim.qpos.shape and cand.sim.qvel.shape == ref.sim.qvel.shape
        actions = torch.zeros(2, ref.num_actions)
        (obs_r, *flags_r, info_r), (obs_c, *flags_c, info_c) = ref.step(actions), cand.step(actions)
        tensors_r, tensors_c = [*obs_r.values(), *flags_r], [*obs_c.values(), *flags_c]
        assert list(obs_c) == list(obs_r)
        for a, b in zip(tensors_r, tensors_c, strict=True):  # obs groups, reward, terminated, truncated
            assert (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)
        assert set(info_c) == set(info_r) and set(info_c["metrics"]) == set(info_r["metrics"])
        ctrl = ref.action_to_ctrl(actions)
        sens_r, sens_c = ref.sim.step(ctrl), cand.sim.step(ctrl)
        assert sens_c.shape == sens_r.shape == (2, ref.cfg.decimation, ref.model.nsensordata)
        assert sens_c.dtype == sens_r.dtype  # tasks write reset sensors into the tensor step returned
        ids = torch.tensor([1])
        fwd_r, fwd_c = ref.sim.forward(ids), cand.sim.forward(ids)
        assert fwd_c.shape == fwd_r.shape == (1, ref.model.nsensordata) and fwd_c.dtype == fwd_r.dtype
    finally:
        ref.close()
        cand.close()


@pytest.mark.parametrize("c", PARAMS)
@pytest.mark.parametrize("device", DEVICES)
def test_backend_on_device_matches_mujoco(device: str, c: Candidate) -> None:
    """The backend alone on `device` (on a GPU: device-resident state, CUDA graphs, stream ordering with torch),
    loaded with the reference's randomized parameters and reset states, fed the reference's controls."""
    ref = make_task("go2-flat", 4, backend="mujoco", seed=2, overrides=STILL)
    sim = make_backend(c.backend, ref.model, 4, device=device)
    try:
        ids = torch.arange(4)
        for field in RANDOMIZED:
            sim.set_model_field(field, ids.to(device), np.stack([ref.sim.model_field(field, e) for e in range(4)]))
        sim.set_state(ids.to(device), ref.sim.qpos.to(device), ref.sim.qvel.to(device))
        fwd = sim.forward(ids.to(device))
        assert fwd.device.type == torch.device(device).type and sim.qpos.device.type == fwd.device.type
        _close("forward sensors", fwd, ref.sim.forward(ids), c.sensor_atol, c.sensor_rtol)
        g = torch.Generator().manual_seed(3)
        for step in range(HORIZON):
            ctrl = ref.action_to_ctrl(0.5 * torch.randn(4, ref.num_actions, generator=g))
            want = ref.sim.step(ctrl)
            got = sim.step(ctrl.to(device))
            _close(f"step {step} sensors", got, want, c.sensor_atol, c.sensor_rtol)
            _close(f"step {step} qpos", sim.qpos, ref.sim.qpos, c.qpos_atol)
            _close(f"step {step} qvel", sim.qvel, ref.sim.qvel, c.qvel_atol)
    finally:
        sim.close()
        ref.close()


# env 0 nominal; envs 1-3 each change one randomized physical parameter, as LocomotionTask._randomize does
def _perturb(task: Task) -> dict[str, np.ndarray]:
    m, k = task.model, 4
    friction = np.repeat(m.geom_friction[None], k, 0)
    friction[3, :, 0] = 0.2
    mass = np.repeat(m.body_mass[None], k, 0)
    mass[1, task._base_body] += 3.0
    strength = np.array([1.0, 1.0, 0.5, 1.0])
    gain = m.actuator_gainprm[None] * np.ones((k, 1, 1))
    gain[:, :, 0] *= strength[:, None]
    bias = m.actuator_biasprm[None] * np.ones((k, 1, 1))
    bias[:, :, 1:3] *= strength[:, None, None]
    forcerange = m.actuator_forcerange[None] * strength[:, None, None]
    return {"geom_friction": friction, "body_mass": mass, "actuator_gainprm": gain, "actuator_biasprm": bias,
            "actuator_forcerange": forcerange}


@pytest.mark.parametrize("c", PARAMS)
def test_per_env_randomization_reaches_the_physics(c: Candidate) -> None:
    """Four identical Go2s shoved forward at 1 m/s; env 1 is 3 kg heavier, env 2 has half the motor strength
    (PD gains and torque limits), env 3 slides on 0.2 friction. Each env's deviation from env 0 must be large and
    the same as on `mujoco`."""
    pinned = {"randomization": {"friction": [1.0, 1.0], "added_base_mass": [0.0, 0.0], "motor_strength": [1.0, 1.0],
                                "push_interval_s": 0.0, "init_joint_noise": 0.0, "init_yaw": False},
              "action_delay_substeps": [0, 0]}
    ref, cand = _pair("go2-flat", 4, c, overrides=pinned)
    try:
        deviation = {}
        for task in (ref, cand):
            ids = torch.arange(4)
            for field, values in _perturb(task).items():
                task.sim.set_model_field(field, ids, values)
            qvel = torch.zeros(4, task.model.nv, dtype=torch.float64)
            qvel[:, 0] = 1.0
            task.sim.set_state(ids, task.sim.qpos.double().clone(), qvel)
            for _ in range(HORIZON):
                task.step(torch.zeros(4, task.num_actions))
            q = task.sim.qpos.double().cpu()
            deviation[task.backend] = q[1:] - q[0]
        if hasattr(cand.sim, "model_field"):
            base = ref._base_body
            assert cand.sim.model_field("body_mass", 1)[base] == pytest.approx(ref.model.body_mass[base] + 3.0)
            assert cand.sim.model_field("actuator_gainprm", 2)[0, 0] == pytest.approx(ref.model.actuator_gainprm[0, 0]
                                                                                      * 0.5)
            assert cand.sim.model_field("geom_friction", 3)[0, 0] == pytest.approx(0.2)
        want, got = deviation["mujoco"], deviation[c.backend]
        for row, what in enumerate(("base mass +3 kg", "motor strength 0.5", "friction 0.2")):
            size = float(want[row].abs().max())
            assert size > 100 * c.qpos_atol, f"{what}: too small an effect ({size:.2g}) to test"
            _close(f"{what}: deviation from env 0", got[row], want[row], 2 * c.qpos_atol)
    finally:
        ref.close()
        cand.close()


@pytest.mark.parametrize("c", PARAMS)
def test_auto_reset_restarts_the_same_envs_in_the_same_states(c: Candidate) -> None:
    """Env 0 is flipped over (terminated) at step 2; envs 1-2 time out at step 4 and env 0 at step 7 (episodes of
    5 steps). The ended envs, their flags, and the first observations of the new episodes match `mujoco`'s."""
    ref, cand = _pair("go2-flat", 3, c, overrides={"episode_length_s": 0.1, **STILL})
    try:
        g = torch.Generator().manual_seed(1)
        for step in range(8):
            if step == 2:
                for task in (ref, cand):
                    qpos = task.sim.qpos.double().clone()
                    qpos[0, 3:7] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # upside down
                    qpos[0, 2] = 0.15
                    task.sim.set_state(torch.tensor([0]), qpos[:1], task.sim.qvel.double()[:1].clone())
            actions = 0.3 * torch.randn(3, ref.num_actions, generator=g)
            obs_r, _, _, term_r, trunc_r, info_r = ref.step(actions)
            obs_c, _, _, term_c, trunc_c, info_c = cand.step(actions)
            assert torch.equal(term_c, term_r) and torch.equal(trunc_c, trunc_r), f"step {step}"
            assert torch.equal(info_c["ended"]["mask"], info_r["ended"]["mask"]), f"step {step}"
            assert torch.equal(cand.episode_step, ref.episode_step)
            _close(f"step {step} qpos", cand.sim.qpos, ref.sim.qpos, c.qpos_atol)
            _close(f"step {step} obs", obs_c["privileged"], obs_r["privileged"], c.obs_atol)
            if step == 2:
                assert term_r[0] and not term_r[1:].any() and ref.episode_step[0] == 0
            if step == 4:
                assert trunc_r.tolist() == [False, True, True]
            if step == 7:
                assert trunc_r.tolist() == [True, False, False]
        assert (cand.projected_gravity[:, 2] < -0.9).all(), "every env restarted upright"
    finally:
        ref.close()
        cand.close()


def test_missing_mjwarp_extra_is_one_line_naming_the_extra() -> None:
    code = ("import sys; sys.modules['mujoco_warp'] = None\n"  # as if mujoco-warp were not installed
            "from robolearn.sim.tasks import make_task\n"
            "from robolearn.errors import ConfigError\n"
            "try:\n    make_task('panda-reach', 1, backend='mjwarp')\n"
            "except ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == [
        "backend 'mjwarp' needs MuJoCo Warp (mujoco_warp is missing): pip install 'robolearn[mjwarp]' "
        "(from a checkout: pip install -e '.[mjwarp]')"]


def test_unknown_backend_field_is_refused() -> None:
    if importlib.util.find_spec("mujoco_warp") is None:
        pytest.skip("mujoco_warp not installed (pip install -e '.[mjwarp]')")
    task = make_task("panda-reach", 1, backend="mjwarp")
    try:
        with pytest.raises(ConfigError, match="cannot set model field 'body_parentid' per env"):
            task.sim.set_model_field("body_parentid", torch.tensor([0]), task.model.body_parentid[None])
    finally:
        task.close()


def test_mjwarp_contact_overflow_is_an_error_not_dropped_contacts() -> None:
    if importlib.util.find_spec("mujoco_warp") is None:
        pytest.skip("mujoco_warp not installed (pip install -e '.[mjwarp]')")
    from robolearn.sim.backends.mjwarp_backend import MjWarpBackend

    task = make_task("go2-flat", 2, overrides=STILL)  # the reference, standing on four feet
    sim = MjWarpBackend(task.model, 2, njmax=8)  # too few constraint rows for four foot contacts
    assert (sim.nconmax, MjWarpBackend(task.model, 1).njmax) == (32, 152)  # the default worst-case capacity
    try:
        sim.set_state(torch.arange(2), task.sim.qpos, task.sim.qvel)
        sim.step(task.action_to_ctrl(torch.zeros(2, 12)))  # MJWarp flags overflows when it integrates
        with pytest.raises(RuntimeError, match="NEFC overflow in 2 env"):
            sim.forward(torch.arange(2))  # checked at every reset
    finally:
        sim.close()
        task.close()
