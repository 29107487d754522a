"""`robolearn export`: a trained run -> a policy bundle (ONNX + deploy.yaml), checked against torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from robolearn.cli.app import app, console

__all__ = ["export"]


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run folder (runs/<name>) or checkpoint file")],
    output: Annotated[Optional[Path], typer.Option(help="bundle folder (default RUN/export)")] = None,
    checkpoint: Annotated[Optional[int], typer.Option(help="export model_<N>.pt of the run (default: the latest)")
                          ] = None,
) -> None:
    """Export a trained policy to a bundle: policy.onnx + deploy.yaml, checked against torch (1e-5)."""
    from robolearn.export import EXPORT_TOLERANCE, export_run

    report = export_run(run, output, checkpoint=checkpoint)
    console.print(f"[bold]bundle[/] {report.folder}: policy.onnx ({report.onnx_bytes / 1024:.0f} KiB), deploy.yaml, "
                  f"parity.npz")
    console.print(f"onnxruntime vs torch on {report.parity_samples} recorded observations: max abs error "
                  f"{report.parity_max_error:.2e} (tolerance {EXPORT_TOLERANCE:.0e})")


