"""`robolearn list` (what is available) and `robolearn bench` (env steps/s per backend and env count)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from robolearn.cli.app import app, console

__all__ = ["list_", "bench"]


@app.command("list")
def list_() -> None:
    """Tasks, robots, backends, hardware profiles and shipped bundles, one line each."""
    from robolearn.deploy.bundle import shipped_bundles
    from robolearn.deploy.profile import load_profile, profile_names
    from robolearn.sim.backends import BACKENDS
    from robolearn.sim.robots.robot_cfg import load_robot_cfg, robot_names
    from robolearn.sim.tasks import task_description, task_names

    sections = {
        "tasks": [(name, task_description(name)) for name in task_names()],
        "robots": [(name, load_robot_cfg(name).description) for name in robot_names()],
        "backends": [(name, description) for name, (_, description) in BACKENDS.items()],
        "hardware profiles": [(name, load_profile(name).description) for name in profile_names()],
        "shipped policy bundles": [(name, f"policies/bundles/{name}") for name in shipped_bundles()],
    }
    for title, rows in sections.items():
        console.print(f"[bold]{title}[/]")
        for name, description in rows:  # descriptions may hold [brackets]: printed as text, not markup
            console.print(f"  {name:<16} {description}", highlight=False, soft_wrap=True, markup=False)

@app.command()
def bench(
    task: Annotated[str, typer.Option(help="task to benchmark")] = "go2-flat",
    backend: Annotated[Optional[list[str]], typer.Option(help="backend, default mujoco (repeat for several); 'all': "
                                                              "every registered one whose dependencies import")] = None,
    num_envs: Annotated[list[int], typer.Option(help="env counts (repeat the option for several)")] = [1024],  # noqa: B006
    steps: Annotated[int, typer.Option(help="policy steps timed per measurement")] = 100,
    max_seconds: Annotated[float, typer.Option(help="time budget per point (build + warm-up + timing); timing stops "
                                                    "at it and a point over it ends that backend's sweep")] = 60.0,
    device: Annotated[str, typer.Option(help="device of the GPU backends: auto (cuda; skipped without a GPU), cpu, "
                                             "cuda, cuda:N; mujoco and pybullet always run on the CPU")] = "auto",
    output: Annotated[Path, typer.Option(help="folder for the JSON, markdown and PNG results")] = Path(
        "benchmarks/results"),
    tag: Annotated[Optional[str], typer.Option(help="machine tag in file names (default: GPU name or cpu<N>)")] = None,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
    max_total_seconds: Annotated[float, typer.Option(help="start no point after this many seconds of the "
                                                          "sweep (0: no limit)")] = 0.0,
) -> None:
    """Env steps/s of TASK (physics + observations + rewards) next to raw physics, per backend and env count;
    writes bench_<task>_<tag>_<date>.{json,md,png} to --output."""
    import math

    from robolearn.bench import print_table, run_sweep, write_report
    from robolearn.cli.export import output_folder

    with output_folder(output, "--output"):  # checked before minutes of measuring
        sweep = run_sweep(task, backend or ["mujoco"], num_envs, steps=steps, max_seconds=max_seconds, device=device,
                          console=console, progress=progress,
                          max_total_seconds=max_total_seconds if max_total_seconds > 0 else math.inf,
                          on_point=lambda partial: write_report(partial, output, tag))
    print_table(sweep, console)
    paths, note = write_report(sweep, output, tag)
    console.print(f"wrote {', '.join(map(str, paths))}" + (f" ({note})" if note else ""), markup=False,
                  highlight=False, soft_wrap=True)


