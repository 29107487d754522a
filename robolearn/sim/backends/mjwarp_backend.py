"""`mjwarp` backend: MuJoCo Warp (MJWarp), MuJoCo's GPU-parallel port written in NVIDIA Warp; one Warp "world"
per env. It also runs on the CPU (slowly; tests and CI) with the same code path.

- State lives on the device: `qpos`/`qvel`, the controls and the per-substep sensor buffer are Warp arrays that
  torch views without copying (`wp.to_torch`). `step` copies the task's controls into the device control buffer
  once (a device-to-device copy when the task's tensors are on the device) and runs the substep loop
  (control row i -> `mujoco_warp.step` -> sensor row i) as one captured Warp graph, a CUDA graph on GPUs and a
  replayed CPU graph on the CPU; no per-step host round trip.
- Precision: Warp computes in float32 (MuJoCo: float64), so `qpos`/`qvel` are float32 views; tasks read them
  with `.float()`, `set_state` takes any float dtype. Sensors are returned as float64 (one small on-device
  conversion per step), like the other backends': tasks write `forward`'s reset sensors into the tensor `step`
  returned, which needs the same dtype.
- Per-env parameters (domain randomization): MJWarp model arrays with a per-world leading dimension (`*` in
  `mujoco_warp.Model`, e.g. geom_friction, body_mass, actuator_gainprm/biasprm/forcerange) are indexed
  `world % len`; a field is expanded from one shared row to one row per env on its first `set_model_field`, then
  written in place (captured graphs are rebuilt after an expansion). As with the `mujoco` backend, quantities
  MuJoCo derives from these at compile time (body_subtreemass, invweight0) are not recomputed, and a value must
  not change a structural switch MJWarp reads at `put_model` (e.g. a zero bias gain becoming non-zero).
- Contacts and constraints have fixed per-world capacities (`nconmax`, `njmax`): the default is a worst-case
  bound computed from the colliding geom pairs and their types (Go2: 32 contacts, 152 rows); MJWarp drops what
  does not fit and flags it per world in `step`; `check()` reads the flags and raises (the training loop calls it
  once per iteration: reading them is a host sync), as does `forward` given env indices.
- Warp's kernel cache: when WARP_CACHE_PATH is unset and the package runs from a source checkout, importing
  `robolearn.sim.backends` sets it to the checkout's `.cache/warp` (ignored by git), so CI can cache that folder;
  otherwise Warp's default (~/.cache/warp) applies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import torch

from robolearn.errors import ConfigError
from robolearn.sim.backends.base import Backend, rows_as_mask

__all__ = ["MjWarpBackend", "contact_capacity", "default_warp_cache", "load_mujoco_warp"]

INSTALL_HINT = "pip install 'robolearn[mjwarp]' (from a checkout: pip install -e '.[mjwarp]')"
_G = mujoco.mjtGeom
# Most contacts MuJoCo / MJWarp make for one geom pair, by the pair's types; other pairs: 8.
_PAIR_CONTACTS = {
    tuple(sorted((int(a), int(b)))): n for a, b, n in (
        (_G.mjGEOM_PLANE, _G.mjGEOM_SPHERE, 1), (_G.mjGEOM_PLANE, _G.mjGEOM_CAPSULE, 2),
        (_G.mjGEOM_PLANE, _G.mjGEOM_ELLIPSOID, 1), (_G.mjGEOM_PLANE, _G.mjGEOM_CYLINDER, 4),
        (_G.mjGEOM_PLANE, _G.mjGEOM_BOX, 4), (_G.mjGEOM_PLANE, _G.mjGEOM_MESH, 4),
        (_G.mjGEOM_SPHERE, _G.mjGEOM_SPHERE, 1), (_G.mjGEOM_SPHERE, _G.mjGEOM_CAPSULE, 1),
        (_G.mjGEOM_SPHERE, _G.mjGEOM_BOX, 1), (_G.mjGEOM_CAPSULE, _G.mjGEOM_CAPSULE, 2),
        (_G.mjGEOM_CAPSULE, _G.mjGEOM_BOX, 2), (_G.mjGEOM_BOX, _G.mjGEOM_BOX, 8),
    )
}
_EQ_ROWS = {mujoco.mjtEq.mjEQ_CONNECT: 3, mujoco.mjtEq.mjEQ_WELD: 6}  # other equality types: 1 row


def default_warp_cache() -> str | None:
    """Set WARP_CACHE_PATH to `<checkout>/.cache/warp` when it is unset and robolearn runs from a source checkout
    (a pyproject.toml beside the package). Must run before Warp initializes. Returns the path in effect."""
    if "WARP_CACHE_PATH" not in os.environ:
        root = Path(__file__).resolve().parents[3]
        if (root / "pyproject.toml").is_file() and (root / "robolearn").is_dir():
            os.environ["WARP_CACHE_PATH"] = str(root / ".cache" / "warp")
    return os.environ.get("WARP_CACHE_PATH")


# At import (robolearn.sim.backends imports this module), so that the setting holds before anything else in the
# process (the mjx backend: `mujoco.mjx` imports Warp when it is installed) initializes Warp.
default_warp_cache()


def load_mujoco_warp() -> tuple[Any, Any]:
    """(warp, mujoco_warp), imported and initialized on first use; a one-line error names the extra if missing."""
    default_warp_cache()
    try:
        import mujoco_warp as mjw
        import warp as wp
    except ImportError as e:
        raise ConfigError(f"backend 'mjwarp' needs MuJoCo Warp ({e.name} is missing): {INSTALL_HINT}") from None
    if wp.config.log_level == wp.LOG_INFO:  # Warp's default: hide the init banner and module loads, keep warnings
        wp.config.log_level = wp.LOG_WARNING
    wp.init()
    return wp, mjw


def contact_capacity(model: mujoco.MjModel, geom_pairs: np.ndarray) -> tuple[int, int]:
    """Worst-case (contacts, constraint rows) of one world: every colliding geom pair at its most contacts, each
    with its condim's rows, plus joint/tendon friction, limits and equality rows."""
    ncon = nrow = 0
    elliptic = model.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC
    for g1, g2 in geom_pairs.reshape(-1, 2):
        key = tuple(sorted((int(model.geom_type[g1]), int(model.geom_type[g2]))))
        n = _PAIR_CONTACTS.get(key, 8)
        condim = int(max(model.geom_condim[g1], model.geom_condim[g2]))
        ncon += n
        nrow += n * (condim if elliptic or condim == 1 else 2 * (condim - 1))
    nrow += int((model.dof_frictionloss > 0).sum() + (model.tendon_frictionloss > 0).sum())
    nrow += int(model.jnt_limited.sum() + model.tendon_limited.sum())
    nrow += sum(_EQ_ROWS.get(mujoco.mjtEq(int(t)), 1) for t in model.eq_type)
    return max(ncon, 1), max(nrow, 1)


def _torch_device(device: str) -> torch.device:
    """`cuda` without an index means torch's current CUDA device (Warp needs the index)."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        if not torch.cuda.is_available():
            raise ConfigError(f"backend 'mjwarp': device {device!r} requested but torch sees no CUDA device")
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class MjWarpBackend(Backend):
    name = "mjwarp"

    def __init__(self, model: mujoco.MjModel, num_envs: int, device: str = "cpu", *, nconmax: int | None = None,
                 njmax: int | None = None, graph: bool = True):
        wp, mjw = load_mujoco_warp()
        super().__init__(model, num_envs, _torch_device(device))
        self._wp, self._mjw = wp, mjw
        try:
            self.wp_device = wp.device_from_torch(self.device)
        except (RuntimeError, IndexError):
            raise ConfigError(f"backend 'mjwarp': Warp has no device for torch device {device!r}; Warp devices: "
                              f"{', '.join(str(d) for d in wp.get_devices())}") from None
        self._cuda = self.wp_device.is_cuda
        with wp.ScopedDevice(self.wp_device):
            try:
                self.m = mjw.put_model(model)
            except NotImplementedError as e:
                raise ConfigError(f"backend 'mjwarp' cannot simulate this model: {e}") from None
            pairs = self.m.nxn_geom_pair_filtered.numpy()
            bound_con, bound_rows = contact_capacity(model, pairs)
            self.nconmax, self.njmax = nconmax or bound_con, njmax or bound_rows
            self.d = mjw.make_data(model, nworld=num_envs, nconmax=self.nconmax, njmax=self.njmax)
            self._stream = wp.Stream(self.wp_device) if self._cuda else None
            if self._cuda:  # uploads ran on Warp's default stream; our stream and torch's start after them
                wp.synchronize_device(self.wp_device)
        self._torch_wp_stream: Any = None
        self._batched_fields = {f.name for f in dataclasses.fields(mjw.Model)
                                if getattr(f.type, "shape", ())[:1] == ("*",)}
        self._graph = graph
        self._graphs: dict[int | str, Any] = {}  # nsub (or "forward") -> captured graph
        self._field_views: dict[str, torch.Tensor] = {}  # per-env model fields as torch views of their Warp arrays
        self._field_arrays: dict[str, Any] = {}
        t = wp.to_torch
        self._qpos, self._qvel = t(self.d.qpos), t(self.d.qvel)
        self._time, self._warmstart = t(self.d.time), t(self.d.qacc_warmstart)
        self._act = t(self.d.act) if model.na else None
        self._sensordata = t(self.d.sensordata)
        self._nsub = 0
        self._launch("forward")

    # -- buffers and graphs -------------------------------------------------------------------------------
    def _buffers(self, nsub: int) -> None:
        """Substep-major device buffers [nsub, N, ...], so that each substep's row is one contiguous array;
        torch sees them as [N, nsub, ...] views."""
        if nsub == self._nsub:
            return
        wp, n, m = self._wp, self.num_envs, self.model
        self._ctrl_wp = wp.zeros((nsub, n, m.nu), dtype=float, device=self.wp_device)
        self._sensor_wp = wp.zeros((nsub, n, m.nsensordata), dtype=float, device=self.wp_device)
        self._ctrl_t = wp.to_torch(self._ctrl_wp).permute(1, 0, 2)
        self._sensor_t = wp.to_torch(self._sensor_wp).permute(1, 0, 2)
        self._sensor64 = torch.zeros((n, nsub, m.nsensordata), dtype=torch.float64, device=self.device)
        if self._cuda:  # the zero fills ran on Warp's default stream: done before torch or our stream use them
            wp.synchronize_device(self.wp_device)
        self._graphs = {k: v for k, v in self._graphs.items() if k == "forward"}
        self._nsub = nsub

    def _substeps(self, nsub: int) -> None:
        wp, mjw = self._wp, self._mjw
        for i in range(nsub):
            if self.model.nu:
                wp.copy(self.d.ctrl, self._ctrl_wp[i])
            mjw.step(self.m, self.d)
            if self.model.nsensordata:
                wp.copy(self._sensor_wp[i], self.d.sensordata)

    def _work(self, what: int | str) -> None:
        if what == "forward":
            self._mjw.forward(self.m, self.d)
        else:
            self._substeps(int(what))

    def _torch_stream(self) -> Any:
        """torch's current CUDA stream as a Warp stream (cached while torch's current stream stays the same)."""
        current = torch.cuda.current_stream(self.device)
        if self._torch_wp_stream is None or self._torch_wp_stream._torch_stream != current:
            self._torch_wp_stream = self._wp.stream_from_torch(current)
        return self._torch_wp_stream

    def _launch(self, what: int | str) -> None:
        """Run the substep loop (`what` = nsub) or a forward pass, as a captured graph when enabled; on CUDA on
        a private stream ordered after and before torch's current stream (events, no host sync)."""
        wp = self._wp
        with wp.ScopedDevice(self.wp_device):
            torch_stream = self._torch_stream() if self._cuda else None
            if torch_stream is not None:
                self._stream.wait_stream(torch_stream)
            with wp.ScopedStream(self._stream) if self._cuda else contextlib.nullcontext():
                if not self._graph:
                    self._work(what)
                else:
                    if what not in self._graphs:
                        with wp.ScopedCapture(device=self.wp_device, stream=self._stream,
                                              force_module_load=False) as capture:
                            self._work(what)
                        self._graphs[what] = capture.graph
                    wp.capture_launch(self._graphs[what], stream=self._stream)
            if torch_stream is not None:
                torch_stream.wait_stream(self._stream)

    # -- Backend API ----------------------------------------------------------------------------------------
    @property
    def qpos(self) -> torch.Tensor:
        return self._qpos

    @property
    def qvel(self) -> torch.Tensor:
        return self._qvel

    def step(self, ctrl: torch.Tensor) -> torch.Tensor:
        nsub = ctrl.shape[1]
        self._buffers(nsub)
        self._ctrl_t.copy_(ctrl.detach())
        self._launch(nsub)
        # float64 like the other backends: tasks write reset sensors (forward) into the tensor step returned
        return self._sensor64.copy_(self._sensor_t)

    def set_state(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        mask, qpos = rows_as_mask(env_ids, qpos, self._qpos)
        _, qvel = rows_as_mask(env_ids, qvel, self._qvel)
        rows = mask.unsqueeze(1)
        self._qpos.copy_(torch.where(rows, qpos, self._qpos))
        self._qvel.copy_(torch.where(rows, qvel, self._qvel))
        # what the `mujoco` backend's reset clears too: time and activations; plus the solver's warm start
        self._time.masked_fill_(mask, 0.0)
        self._warmstart.masked_fill_(rows, 0.0)
        if self._act is not None:
            self._act.masked_fill_(rows, 0.0)

    def _field(self, field: str) -> Any:
        """The per-world Warp array of model field `field`, expanded to one row per env on first use."""
        if field not in self._batched_fields:
            raise ConfigError(f"backend 'mjwarp' cannot set model field {field!r} per env; fields with a per-world "
                              f"dimension: {', '.join(sorted(self._batched_fields))}")
        arr = getattr(self.m, field)
        if arr.shape[0] != self.num_envs:
            wp = self._wp
            tiled = np.repeat(arr.numpy()[:1], self.num_envs, axis=0)
            arr = wp.array(tiled, dtype=arr.dtype, device=self.wp_device)
            arr._is_batched = True  # as mujoco_warp.put_model marks its batched arrays
            setattr(self.m, field, arr)
            if self._cuda:  # the upload ran on Warp's default stream (once per field)
                wp.synchronize_device(self.wp_device)
            self._graphs.clear()  # captured graphs hold the old array
        return arr

    def set_model_field(self, field: str, env_ids: torch.Tensor, values: torch.Tensor | np.ndarray) -> None:
        arr = self._field(field)
        view = self._field_views.get(field)
        if view is None or self._field_arrays.get(field) is not arr:  # a torch view per Warp array, made once
            view = self._field_views[field] = self._wp.to_torch(arr)
            self._field_arrays[field] = arr
        values = torch.as_tensor(values).reshape(-1, *view.shape[1:])
        mask, values = rows_as_mask(env_ids, values, view)
        view.copy_(torch.where(mask.view(-1, *(1,) * (view.dim() - 1)), values, view))

    def model_field(self, field: str, env_id: int) -> np.ndarray:
        """Model field `field` as env `env_id` sees it, in MuJoCo's shape (float64)."""
        arr = getattr(self.m, field)
        row = arr.numpy()[env_id % arr.shape[0]]
        return np.asarray(row, dtype=np.float64).reshape(getattr(self.model, field).shape)

    def forward(self, env_ids: torch.Tensor) -> torch.Tensor:
        """Forward pass of all worlds (state-neutral: the warm start is only written by `step`); returns the
        sensors of `env_ids` (all rows for a mask). Actuator sensors use each env's last control, as in the
        `mujoco` backend. Given indices it also checks the contact buffers (`check`, a host sync); given a mask
        (the training loop's auto-reset) it leaves that to the loop's once-per-iteration `check`."""
        self._launch("forward")
        if env_ids.dtype == torch.bool:
            return self._sensordata.double()
        self.check()
        return self._sensordata[env_ids.to(self.device)].double()

    def check(self) -> None:
        self.check_overflow()

    def check_overflow(self) -> None:
        """Raise if any world ran out of contact or constraint capacity since the start (one small read)."""
        with self._wp.ScopedDevice(self.wp_device), (
                self._wp.ScopedStream(self._stream) if self._cuda else contextlib.nullcontext()):
            flags = self.d.overflow.numpy()  # ordered after the last step / forward on our stream
        if flags.any():
            names = [f.name for f in self._mjw.OverflowType if f.value and not f.value & (f.value - 1)
                     and np.bitwise_or.reduce(flags) & f.value]
            raise RuntimeError(f"backend 'mjwarp': {', '.join(names)} overflow in {int((flags != 0).sum())} env(s) "
                               f"(nconmax {self.nconmax}, njmax {self.njmax}): pass larger nconmax/njmax")

    def close(self) -> None:
        self._graphs.clear()

