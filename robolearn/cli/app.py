"""The typer app every command module registers on, its console, and what commands share: `--set` parsing, run
folders, one-line errors, `--version`."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from robolearn.errors import RobolearnError, missing_extra

__all__ = ["app", "console", "main", "parse_sets", "set_path", "new_run_dir"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="robolearn: train robot policies in simulation and take them to real robots.")
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"robolearn {importlib.metadata.version('robolearn')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """robolearn: train robot policies in simulation and take them to real robots."""


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def parse_sets(items: list[str], **options: Any) -> dict[str, Any]:
    """`--set ppo.learning_rate=3e-4 --set task_overrides.commands.lin_vel_x=[0,1]` (values parsed as YAML), then
    the command's own options (`num_envs=...`, top-level config fields) that were given (not None) on top."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RobolearnError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise RobolearnError(f"--set {key}: cannot parse value {raw!r}") from None
        set_path(out, key, value)
    out.update({key: value for key, value in options.items() if value is not None})
    return out


def new_run_dir(run_dir: Path, resume: Path | None = None) -> Path:
    """`run_dir`, refused when it already holds a run's checkpoints (a second run would overwrite them),
    unless it is the run being resumed."""
    ckpts = run_dir / "checkpoints"
    resuming_it = resume is not None and (resume.resolve() == run_dir.resolve()
                                          or resume.resolve().parent.parent == run_dir.resolve())
    if ckpts.is_dir() and any(ckpts.glob("*.pt")) and not resuming_it:
        raise RobolearnError(f"run folder {run_dir} already holds a run ({ckpts}); pick another --name, or continue "
                             f"that run with --resume {run_dir}")
    from robolearn.cli.export import output_folder

    with output_folder(run_dir.parent, "--runs-dir"):  # checked before any env is built
        pass
    return run_dir


def main() -> None:
    try:
        from typer._click.exceptions import ClickException  # typer >= 0.24 carries its own copy of click
    except ImportError:
        from click import ClickException

    try:
        code = app(standalone_mode=False)  # click's usage errors come here, to be printed as one line
    except ClickException as exc:  # an unknown command or option, a missing or malformed value
        if type(exc).__name__ == "NoArgsIsHelpError":  # `robolearn`, `robolearn dataset`: the help was printed
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
        Console(stderr=True).print(f"[red]error:[/] {escape(exc.format_message() + hint)}", highlight=False,
                                   soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:  # end of input at a prompt
        Console(stderr=True).print("Aborted!", highlight=False)
        sys.exit(1)
    except RobolearnError as exc:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ImportError as exc:  # an optional dependency this install lacks (robolearn[deploy] has no torch, MuJoCo)
        hint = missing_extra(exc)
        if hint is None:
            raise
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        Console(stderr=True).print(f"[red]error:[/] {escape(f'robolearn {command}: {hint}')}", highlight=False,
                                   soft_wrap=True)
        sys.exit(2)
    if isinstance(code, int) and code:  # typer.Exit(code) of a command, 130 on Ctrl-C
        sys.exit(code)
