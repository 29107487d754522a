"""`mjx` backend: MuJoCo XLA (MJX, MuJoCo in JAX), all envs stepped by one jitted function on a JAX device.

The state of every env is one batched `mjx.Data` on the device; per-env model parameters (domain randomization)
are batched copies of the randomizable `mjx.Model` fields, mapped together with the state (`jax.vmap`, as MuJoCo
Playground's randomization does with `in_axes`). `step` runs one jitted program: `vmap` over the envs of a loop
over the substeps (mj_step each: `mjx.forward`, then the integrator), stacking every substep's sensor data. The
loop count is an argument, not a shape: one compiled program serves every `nsub` up to `max_substeps` and also
`forward` (a substep's sensors are those of the state it starts from, so one substep with its result dropped is
mj_forward). MJX compiles for tens of seconds (on the CPU 10-40 s per program), so this halves compile time.
Tensors cross to torch by DLPack without copies (`qpos`, `qvel` and sensor data out; controls and states in),
so on a GPU the state never leaves the device and `step` makes no host copies.

- Precision: float32 (what MJX uses on GPUs), unless `jax_enable_x64` was switched on before the backend was made.
  `qpos`/`qvel` are float32 tensors (tasks call `.float()` and hand float64 to `set_state`); sensor data is cast
  to float64 on the device, as every backend returns it.
- `qpos`/`qvel` are read-only views of the current state: a `step` or `set_state` makes new device arrays
  (re-read the properties), and writes go through `set_state`.
- Features: whatever MJX's JAX implementation supports (MuJoCo 4.0 + mujoco-mjx 3.17: the Go2 and Panda scenes
  run as built: implicitfast, pyramidal cone, Newton solver, sphere/capsule/box-plane contacts, joint limits,
  frictionloss, gravity compensation, touch/framepos/framelinvel/actuatorfrc sensors, position actuators with
  force limits). One MJX 3.17 difference is corrected here (see `_integrate`). A model it cannot simulate (e.g.
  cylinder-box contacts, mesh margins, flex, noslip) raises ConfigError naming the feature.
- Compiled programs are kept per process (every backend of the same model, batch size and device shares them)
  and on disk by JAX's compilation cache (see `_enable_compile_cache`); tracing still takes a few seconds.
- On the CPU, MJX is slow (2-60x slower than the `mujoco` backend): fine for tests with a few envs, never for
  training there.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import torch

from robolearn.errors import ConfigError
from robolearn.sim.backends.base import Backend

__all__ = ["MjxBackend", "RANDOMIZABLE_FIELDS", "CPU_ENV_WARNING"]

RANDOMIZABLE_FIELDS = ("geom_friction", "body_mass", "actuator_gainprm", "actuator_biasprm", "actuator_forcerange")
CPU_ENV_WARNING = 64  # MJX on the CPU hung at 256 envs (DESIGN.md): warn above this
_CHUNK = 64  # set_state / set_model_field / forward run on min(num_envs, 64) envs, or on all: two compiled shapes
MAX_SUBSTEPS = 8  # default of the most substeps one `step` program runs; more recompiles once with the new count
_INSTALL = "pip install 'robolearn[mjx]' (from a checkout: pip install -e '.[mjx]')"


def _import_jax() -> tuple[Any, Any]:
    """(jax, mujoco.mjx), or a one-line ConfigError naming the extra to install."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch
    try:
        import jax
        from mujoco import mjx
    except ImportError as e:
        raise ConfigError(f"backend 'mjx' needs JAX and MuJoCo MJX ({e.name} is missing): {_INSTALL}") from None
    return jax, mjx


def _enable_compile_cache(jax: Any) -> None:
    """Persist compiled programs (MJX compiles for tens of seconds) unless the user chose a JAX cache already:
    `ROBOLEARN_JAX_CACHE` (a folder, or `off`); by default `.cache/jax` in a source checkout (git-ignored; CI can
    keep it between runs), else `$XDG_CACHE_HOME/robolearn/jax`."""
    if jax.config.jax_compilation_cache_dir:
        return
    path = os.environ.get("ROBOLEARN_JAX_CACHE", "")
    if path.lower() in ("off", "0", "none"):
        return
    if not path:
        checkout = Path(__file__).resolve().parents[3]
        if (checkout / ".git").exists() and (checkout / "pyproject.toml").is_file():
            path = str(checkout / ".cache" / "jax")
        else:
            path = str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robolearn" / "jax")
    jax.config.update("jax_compilation_cache_dir", path)


def _jax_device(jax: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return jax.devices("cpu")[0]
    if device.type == "cuda":
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
        index = device.index or 0
        if index >= len(gpus):
            raise ConfigError(f"backend 'mjx' on {device}: JAX sees {len(gpus)} GPU(s) (jax {jax.__version__}); "
                              "install a CUDA build of jax, e.g. pip install 'jax[cuda12]'")
        return gpus[index]
    raise ConfigError(f"backend 'mjx' runs on cpu or cuda devices; got {device}")


def _check_model(model: mujoco.MjModel) -> None:
    """Features MJX would silently ignore (put_model rejects the others itself)."""
    if model.opt.noslip_iterations > 0:
        raise ConfigError("backend 'mjx': MJX has no noslip solver (model option noslip_iterations > 0); "
                          "use backend 'mujoco'")


class MjxBackend(Backend):
    name = "mjx"

    def __init__(self, model: mujoco.MjModel, num_envs: int, device: str = "cpu", max_substeps: int = MAX_SUBSTEPS):
        super().__init__(model, num_envs, device)
        jax, mjx = _import_jax()
        _enable_compile_cache(jax)
        self._jax = jax
        self._jdev = _jax_device(jax, self.device)
        if self._jdev.platform == "cpu" and num_envs > CPU_ENV_WARNING:
            warnings.warn(f"backend 'mjx' on the CPU with {num_envs} envs: MJX is slow there and hung at 256 envs; "
                          "use backend 'mujoco' on CPUs", stacklevel=2)
        _check_model(model)
        try:
            self._mx = mjx.put_model(model, device=self._jdev, impl="jax")
        except NotImplementedError as e:
            raise ConfigError(f"backend 'mjx' (mujoco-mjx {importlib.metadata.version('mujoco-mjx')}) cannot "
                              f"simulate this model: {str(e).rstrip('.')}; use backend 'mujoco' or 'mjwarp'") from None
        buffer = np.empty(mujoco.mj_sizeModel(model), np.uint8)
        mujoco.mj_saveModel(model, None, buffer)
        # Compiled programs are shared by every backend of the same model, device and precision.
        self._key = (hashlib.sha1(buffer).hexdigest(), str(self._jdev), bool(jax.config.jax_enable_x64))
        # XLA's CPU fusion emitters take minutes on MJX's vmapped kinematic chains (Panda: kinematics alone 62 s
        # instead of 4 s) for no speed-up; the GPU compiler is left alone.
        self._compiler_options = {"xla_cpu_use_fusion_emitters": False} if self._jdev.platform == "cpu" else None
        self.compile_s: dict[str, float] = {}  # seconds to trace + compile each program this backend compiled
        self.max_substeps = max_substeps
        self.dtype = torch.float64 if jax.config.jax_enable_x64 else torch.float32
        # Small batches run padded to a power of two (at least 4) so that 1-4 envs share one compiled program;
        # padding row r mirrors env r % num_envs (same parameters, state and controls), so it costs time only.
        self.rows = num_envs if num_envs > _CHUNK else max(4, 1 << (num_envs - 1).bit_length())
        self._mirror = torch.arange(self.rows, device=self.device) % num_envs
        self._chunk = min(self.rows, _CHUNK)
        self._counts: dict[int, Any] = {}  # loop counts as device scalars
        with jax.default_device(self._jdev):
            data = mjx.make_data(self._mx)
        batch = functools.partial(_batch, rows=self.rows)
        self._fields, self._data = self._program("batch", self.rows, batch, self._mx, data)(self._mx, data)
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- torch <-> jax, zero-copy ------------------------------------------------------------------------
    def _to_jax(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> Any:
        t = t.detach().to(device=self.device, dtype=dtype or self.dtype).contiguous()
        return self._jax.dlpack.from_dlpack(t)

    def _count(self, n: int) -> Any:
        if n not in self._counts:
            self._counts[n] = self._jax.device_put(np.int32(n), self._jdev)
        return self._counts[n]

    def _rows_of(self, env_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows that hold `env_ids` (with their padding mirrors) and, per row, its position in `env_ids`."""
        env_ids = env_ids.to(self.device)
        if self.rows == self.num_envs:
            return env_ids, torch.arange(len(env_ids), device=self.device)
        where = torch.full((self.num_envs,), -1, dtype=torch.long, device=self.device)
        where[env_ids] = torch.arange(len(env_ids), device=self.device)
        rows = (where[self._mirror] >= 0).nonzero().flatten()
        return rows, where[self._mirror[rows]]

    def _padded_ids(self, rows: torch.Tensor, fill: int) -> tuple[Any, int]:
        """Row ids padded to one of two sizes (the chunk or all rows) with `fill`, as a jax int32 array."""
        k = len(rows)
        size = self._chunk if k <= self._chunk else self.rows
        ids = torch.full((size,), fill, dtype=torch.int32, device=self.device)
        ids[:k] = rows
        return self._to_jax(ids, torch.int32), size

    def _pad_values(self, x: torch.Tensor, size: int) -> Any:
        out = torch.zeros((size, *x.shape[1:]), dtype=self.dtype, device=self.device)
        out[: len(x)] = x.to(self.device)
        return self._to_jax(out)

    # -- the backend API ---------------------------------------------------------------------------------
    @property
    def qpos(self) -> torch.Tensor:
        return self._state_views()[0]

    @property
    def qvel(self) -> torch.Tensor:
        return self._state_views()[1]

    def _state_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._views is None:
            n = self.num_envs
            self._views = (torch.from_dlpack(self._data.qpos)[:n], torch.from_dlpack(self._data.qvel)[:n])
        return self._views

    def step(self, ctrl: torch.Tensor) -> torch.Tensor:
        nsub = ctrl.shape[1]
        self.max_substeps = max(self.max_substeps, nsub)
        u = torch.zeros((self.rows, self.max_substeps, self.model.nu), dtype=self.dtype, device=self.device)
        ctrl = ctrl.detach().to(self.device)
        u[:, :nsub] = ctrl if self.rows == self.num_envs else ctrl[self._mirror]
        self._data, sensordata = self._advance(self._fields, self._data, self._to_jax(u), nsub)
        self._views = None
        return self._sensors_out(sensordata, self.num_envs, slice(nsub))

    def set_state(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        if env_ids.dtype == torch.bool:  # every row at once (no host sync): one program for all resets
            args = (self._data, self._row_mask(env_ids), self._row_values(qpos), self._row_values(qvel))
            self._data = self._program("set_state_where", self.rows, _set_state_where, *args)(*args)
            self._views = None
            return
        rows, source = self._rows_of(env_ids)
        ids, size = self._padded_ids(rows, fill=self.rows)  # out-of-range ids are dropped
        qpos, qvel = qpos.to(self.device)[source], qvel.to(self.device)[source]
        args = (self._data, ids, self._pad_values(qpos, size), self._pad_values(qvel, size))
        self._data = self._program("set_state", size, _set_state, *args)(*args)
        self._views = None

    def set_model_field(self, field: str, env_ids: torch.Tensor, values: torch.Tensor | np.ndarray) -> None:
        if field not in self._fields:
            raise ConfigError(f"backend 'mjx' cannot set model field {field!r} per env; supported: "
                              f"{', '.join(RANDOMIZABLE_FIELDS)}")
        masked = env_ids.dtype == torch.bool
        shape = (self.num_envs if masked else len(env_ids), *getattr(self.model, field).shape)
        if tuple(values.shape) != shape:
            raise ValueError(f"set_model_field({field!r}): values must be {list(shape)}, got {list(values.shape)}")
        values_t = torch.as_tensor(values).to(self.device)
        if masked:
            args = (self._fields[field], self._row_mask(env_ids), self._row_values(values_t))
            self._fields = {**self._fields, field: self._program(f"set_{field}_where", self.rows, _set_rows_where,
                                                                 *args)(*args)}
            return
        rows, source = self._rows_of(env_ids)
        ids, size = self._padded_ids(rows, fill=self.rows)
        args = (self._fields[field], ids, self._pad_values(values_t[source], size))
        self._fields = {**self._fields, field: self._program(f"set_{field}", size, _set_rows, *args)(*args)}

    def forward(self, env_ids: torch.Tensor) -> torch.Tensor:
        """Sensor data at the current state of `env_ids` with each env's last controls: one substep of those envs
        (gathered into a batch of the chunk size, or all rows; for a mask always all rows, no host sync) whose
        resulting state is dropped."""
        if env_ids.dtype == torch.bool:
            args = (self._data,)
            ctrl = self._program(f"last_ctrl[{self.max_substeps}]", self.rows, functools.partial(
                _last_ctrl, substeps=self.max_substeps), *args)(*args)
            _, sensordata = self._advance(self._fields, self._data, ctrl, 1)
            return self._sensors_out(sensordata, self.num_envs, 0)
        ids, size = self._padded_ids(env_ids.to(self.device), fill=0)  # padding recomputes env 0, cut off below
        gather = functools.partial(_gather, substeps=self.max_substeps)
        args = (self._fields, self._data, ids)
        fields, data, ctrl = self._program(f"gather[{self.max_substeps}]", size, gather, *args)(*args)
        _, sensordata = self._advance(fields, data, ctrl, 1)
        return self._sensors_out(sensordata, len(env_ids), 0)

    def _row_mask(self, mask: torch.Tensor) -> Any:
        """A mask over envs as a bool jax array over rows (padding rows follow the env they mirror)."""
        mask = mask.to(self.device)
        return self._to_jax(mask if self.rows == self.num_envs else mask[self._mirror], torch.bool)

    def _row_values(self, values: torch.Tensor) -> Any:
        """Values [num_envs, ...] as a jax array over rows, in the backend's precision."""
        values = values.to(self.device)
        return self._to_jax(values if self.rows == self.num_envs else values[self._mirror])

    def model_field(self, field: str, env_id: int) -> np.ndarray:
        """The value of a model field in env `env_id` (copied to the host; for tests and inspection)."""
        if field in self._fields:
            return np.asarray(self._fields[field][env_id])
        return getattr(self.model, field)

    def close(self) -> None:
        """Drop the device state (compiled programs stay cached for the next backend of this model)."""
        self._views = None
        self._data = self._fields = None

    # -- compiled programs -------------------------------------------------------------------------------
    def _advance(self, fields: Any, data: Any, ctrl: Any, nsub: int) -> tuple[Any, Any]:
        args = (self._mx, fields, data, ctrl, self._count(nsub))
        rows, substeps = ctrl.shape[:2]
        return self._program(f"advance[{substeps}]", rows, _advance, *args)(*args)

    def _sensors_out(self, x: Any, rows: int, substeps: slice | int) -> torch.Tensor:
        """Sensor data [rows, substeps] as float64 like every backend (a cast on the device): tasks write
        `forward`'s rows into the tensor `step` returned."""
        return torch.from_dlpack(x)[:rows, substeps].to(torch.float64, copy=True)  # never a view of a JAX array

    def _program(self, kind: str, rows: int, fn: Callable, *args: Any) -> Callable:
        """`jit(fn)` traced and compiled for `args` once per process (and cached on disk by JAX)."""
        key = (*self._key, kind, rows)
        compiled = _PROGRAMS.get(key)
        if compiled is None:
            start = time.perf_counter()
            try:
                lowered = self._jax.jit(fn).lower(*args)
            except NotImplementedError as e:
                raise ConfigError(f"backend 'mjx' cannot simulate this model: {str(e).rstrip('.')}; "
                                  "use backend 'mujoco' or 'mjwarp'") from None
            try:
                compiled = lowered.compile(compiler_options=self._compiler_options)
            except RuntimeError as e:  # JaxRuntimeError from an XLA without that option: compile as it is
                if "No such compile option" not in str(e):
                    raise
                self._compiler_options = None
                compiled = lowered.compile()
            _PROGRAMS[key] = compiled
            self.compile_s[f"{kind}x{rows}"] = time.perf_counter() - start
        return compiled


_PROGRAMS: dict[tuple, Callable] = {}


def _batch(mx: Any, data: Any, rows: int) -> tuple[dict[str, Any], Any]:
    """Per-row copies of the randomizable model fields and of the initial state (qpos0, at rest)."""
    import jax

    data = data.replace(qpos=mx.qpos0.astype(data.qvel.dtype))

    def tile(x: Any) -> Any:
        return jax.numpy.broadcast_to(x[None], (rows, *x.shape))

    fields = {f: tile(getattr(mx, f)) for f in RANDOMIZABLE_FIELDS}
    return fields, jax.tree_util.tree_map(tile, data)


def _advance(mx: Any, fields: dict[str, Any], data: Any, ctrl: Any, nsub: Any) -> tuple[Any, Any]:
    """`nsub` (a traced count, <= ctrl.shape[1]) substeps of every env (vmap) with controls `ctrl` [envs, S, nu];
    returns the new state and the sensor data of every substep [envs, S, nsensordata] (zeros beyond `nsub`)."""
    import jax
    from mujoco import mjx

    def one_env(env_fields: dict[str, Any], d: Any, u: Any) -> tuple[Any, Any]:
        m = mx.replace(**env_fields)  # this env's friction, masses, gains

        def substep(k: Any, carry: tuple[Any, Any]) -> tuple[Any, Any]:
            d, sensors = carry
            d = mjx.forward(m, d.replace(ctrl=u[k]))  # mj_step: forward (sensors of this state), then integrate
            return _integrate(m, d), sensors.at[k].set(d.sensordata)

        sensors = jax.numpy.zeros((u.shape[0], d.sensordata.shape[0]), d.sensordata.dtype)
        return jax.lax.fori_loop(0, nsub, substep, (d, sensors))

    return jax.vmap(one_env)(fields, data, ctrl)


def _integrate(m: Any, d: Any) -> Any:
    """`mjx.step`'s integration, except that implicitfast leaves out the velocity derivative of actuators whose
    force is clamped by their force range, as MuJoCo 4.0 does (mjd_actuator_vel) and MJX 3.17 does not: there a
    saturated position actuator still damps implicitly, and the Panda drifts 0.07 rad from MuJoCo in 40 steps."""
    from mujoco import mjx

    integrator = int(m.opt.integrator)
    if integrator == mujoco.mjtIntegrator.mjINT_EULER:
        return mjx.euler(m, d)
    if integrator == mujoco.mjtIntegrator.mjINT_RK4:
        return mjx.rungekutta4(m, d)
    limited = np.asarray(m.actuator_forcelimited, dtype=bool)
    if limited.any():
        force, bounds = d.actuator_force, m.actuator_forcerange
        free = ~(limited & ((force <= bounds[:, 0]) | (force >= bounds[:, 1])))
        m = m.replace(actuator_biasprm=m.actuator_biasprm.at[:, 2].multiply(free),
                      actuator_gainprm=m.actuator_gainprm.at[:, 2].multiply(free))
    return mjx.implicit(m, d)


def _gather(fields: dict[str, Any], data: Any, ids: Any, substeps: int) -> tuple[Any, Any, Any]:
    """Model fields and state of envs `ids`, with their last controls as [len(ids), substeps, nu]."""
    import jax

    fields, data = jax.tree_util.tree_map(lambda x: x[ids], (fields, data))
    ctrl = jax.numpy.broadcast_to(data.ctrl[:, None], (len(ids), substeps, data.ctrl.shape[-1]))
    return fields, data, ctrl


def _set_state(data: Any, ids: Any, qpos: Any, qvel: Any) -> Any:
    """A reset of rows `ids` (out-of-range ids are dropped): new qpos/qvel, time, activations and warm start 0."""
    zero = {name: getattr(data, name).at[ids].set(0, mode="drop") for name in ("time", "act", "qacc_warmstart")}
    return data.replace(qpos=data.qpos.at[ids].set(qpos, mode="drop"),
                        qvel=data.qvel.at[ids].set(qvel, mode="drop"), **zero)


def _set_rows(values: Any, ids: Any, rows: Any) -> Any:
    return values.at[ids].set(rows.astype(values.dtype), mode="drop")


def _where_rows(mask: Any, new: Any, old: Any) -> Any:
    """`new` in the rows of `mask` [rows], `old` elsewhere."""
    import jax

    return jax.numpy.where(mask.reshape(-1, *(1,) * (old.ndim - 1)), new.astype(old.dtype), old)


def _set_state_where(data: Any, mask: Any, qpos: Any, qvel: Any) -> Any:
    """`_set_state` for the rows of a bool mask, every row computed (a fixed shape: no host sync)."""
    import jax

    zero = {name: _where_rows(mask, jax.numpy.zeros_like(getattr(data, name)), getattr(data, name))
            for name in ("time", "act", "qacc_warmstart")}
    return data.replace(qpos=_where_rows(mask, qpos, data.qpos), qvel=_where_rows(mask, qvel, data.qvel), **zero)


def _set_rows_where(values: Any, mask: Any, rows: Any) -> Any:
    return _where_rows(mask, rows, values)


def _last_ctrl(data: Any, substeps: int) -> Any:
    """Every row's last controls as [rows, substeps, nu] (the controls of a state-neutral `forward` substep)."""
    import jax

    return jax.numpy.broadcast_to(data.ctrl[:, None], (data.ctrl.shape[0], substeps, data.ctrl.shape[-1]))
