"""Count the torch calls that make the host wait for the device (a D2H copy or a data-dependent shape).

On a GPU each of these stalls the CPU until the queued kernels have run; in a training step they serialize the
host and the device. Host data copied to the device in a step (`torch.tensor(list)`, indexing with a Python list)
counts too: from pageable memory the copy makes the host wait as well (torch's CUDA sync debug mode reports it).
`HostSyncs` sees them on any device (through torch's function-override mode), so a CPU test proves that a code
path would not sync on CUDA. `.to("cpu")` counts; `.to(device)` with a torch.device (the task's own) does not.
"""

from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode

_T = torch.Tensor
# Results that need device values on the host.
SYNCING = {_T.item, _T.tolist, _T.__bool__, _T.__int__, _T.__float__, _T.__index__, _T.numpy, _T.cpu,
           _T.nonzero, torch.nonzero, _T.argwhere, torch.argwhere, _T.masked_select, torch.masked_select,
           _T.unique, torch.unique, torch.equal, _T.allclose, torch.allclose}


def _bool_index(index: object) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


def _list_index(index: object) -> bool:
    """A Python list as an index: torch makes a host tensor of it and copies it to the device at every use."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, list) for p in parts)


class HostSyncs(TorchFunctionMode):
    """`with HostSyncs() as syncs: ...` then `syncs.calls`: (op name, caller frame) of every syncing call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        syncs = func in SYNCING
        if func in (_T.__getitem__, _T.__setitem__) and len(args) > 1 and _bool_index(args[1]):
            syncs, name = True, f"{name}[bool mask]"
        if func in (_T.__getitem__, _T.__setitem__) and len(args) > 1 and _list_index(args[1]):
            syncs, name = True, f"{name}[list]"
        # torch.tensor(data) copies host data to the device (with pageable memory the host waits for the copy)
        if func in (torch.tensor, torch.as_tensor) and args and not isinstance(args[0], torch.Tensor):
            syncs, name = True, f"{name}(host data)"
        # normal(mean, std) checks on the host that every std >= 0
        if func is torch.normal and len(args) > 1 and isinstance(args[1], torch.Tensor):
            syncs, name = True, "normal(tensor std)"
        # `.to("cpu")` names the host; `.to(self.device)` (a torch.device, the task's: the CPU in these tests, the
        # GPU in training) does not leave the device.
        if func is _T.to and any(isinstance(a, str) and a.startswith("cpu") for a in (*args[1:], kwargs.get("device"))):
            syncs, name = True, "to('cpu')"
        if syncs:
            frame = next((f for f in reversed(traceback.extract_stack()[:-1]) if "/robolearn/" in f.filename
                          and "/tests/" not in f.filename), None)
            self.calls.append((name, f"{frame.filename}:{frame.lineno}" if frame else "?"))
        return func(*args, **kwargs)
