"""`robolearn export`: a trained run -> a policy bundle (ONNX + deploy.yaml), checked against torch."""

from __future__ import annotations

import contextlib
import errno
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from robolearn.cli.app import app, console
from robolearn.errors import RobolearnError

__all__ = ["export", "output_folder"]


@contextlib.contextmanager
def output_folder(folder: Path, option: str) -> Iterator[Path]:
    """Create `folder` (and its parents) and check that files can be written into it, before the work that fills
    it: a one-line RobolearnError naming the path otherwise (a file in the way, a read-only or pseudo file
    system such as /proc, no permission). If the body fails, the folders created here are removed again (when
    still empty); an OSError of the body on a file in `folder` becomes one line naming that file."""
    missing = []
    parent = folder
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".rl-write-check-"):
            pass
    except OSError as exc:
        _remove_empty(missing)
        raise RobolearnError(f"{option} {folder}: cannot write there ({exc.filename or folder}: "
                             f"{exc.strerror or exc})") from None
    try:
        yield folder
    except BaseException as exc:
        _remove_empty(missing)
        if isinstance(exc, OSError) and exc.filename is not None and _inside(Path(str(exc.filename)), folder):
            raise RobolearnError(f"{option} {folder}: cannot write {exc.filename} ({exc.strerror or exc})") from None
        raise


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.absolute(), folder.absolute()
    return path == folder or folder in path.parents


def _remove_empty(folders: list[Path]) -> None:
    for path in folders:  # deepest first
        try:
            path.rmdir()
        except OSError:
            return


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run folder (runs/<name>) or checkpoint file")],
    output: Annotated[Optional[Path], typer.Option(help="bundle folder (default RUN/export)")] = None,
    checkpoint: Annotated[Optional[int], typer.Option(help="export model_<N>.pt of the run (default: the latest)")
                          ] = None,
    execute: Annotated[Optional[int], typer.Option(
        help="diffusion runs: actions executed from each chunk on the robot (default: the run's)")] = None,
    sampler: Annotated[Optional[str], typer.Option(
        help="diffusion runs: ddim or warm (RTI-DP warm start) on the robot (default: the run's)")] = None,
    warm_steps: Annotated[Optional[int], typer.Option(
        help="diffusion runs: DDIM steps of a warm-started plan (default: the run's)")] = None,
    warm_schedule: Annotated[Optional[int], typer.Option(
        help="diffusion runs: the DDIM schedule whose last --warm-steps a warm plan runs (default: the run's)")
    ] = None,
) -> None:
    """Export a trained policy to a bundle: policy.onnx (a diffusion run: denoiser.onnx and its sampler) +
    deploy.yaml, checked against torch (1e-5; a diffusion sampler's whole loop 1e-4)."""
    from robolearn.export import export_run

    sampling = {k: v for k, v in (("execute", execute), ("sampler", sampler), ("warm_steps", warm_steps),
                                  ("warm_schedule_steps", warm_schedule)) if v is not None}
    if output is None:
        report = export_run(run, output, checkpoint=checkpoint, sampling=sampling)
    else:
        with output_folder(output, "--output"):  # checked before minutes of recording and checking
            report = export_run(run, output, checkpoint=checkpoint, sampling=sampling)
    console.print(f"[bold]bundle[/] {report.folder}: {report.graph_file} ({report.onnx_bytes / 1024:.0f} KiB), "
                  f"deploy.yaml, parity.npz")
    console.print(f"onnxruntime vs torch on {report.parity_samples} {report.parity_of}: max abs error "
                  f"{report.parity_max_error:.2e} (tolerance {report.tolerance:.0e})")


