"""A torch module as ONNX bytes: the one conversion export (bundles) and evaluation (onnxruntime latency of a
learned model, e.g. `OnnxDenoiser`) share. It lives in learn so learn never imports export."""

from __future__ import annotations

import io
import logging
import warnings

import torch
from torch import nn

__all__ = ["onnx_bytes"]


def onnx_bytes(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str]) -> bytes:
    """`module` as an ONNX model (torch.export), every input's first dimension a dynamic batch."""
    buffer = io.BytesIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, buffer, input_names=inputs, output_names=outputs,
                          dynamic_shapes=tuple({0: batch} for _ in inputs), dynamo=True,
                          external_data=False, verbose=False)
    return buffer.getvalue()
