"""`robolearn dataset info|validate|replay`: recorded LeRobot v3 datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from robolearn.cli.app import app, console

__all__ = ["dataset_app"]


dataset_app = typer.Typer(no_args_is_help=True, help="Inspect, check and replay recorded datasets (LeRobot v3).")
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("info")
def dataset_info(path: Annotated[Path, typer.Argument(help="dataset folder")]) -> None:
    """Summary: fps, robot, episodes, frames, features, tasks, per-episode length and success."""
    import numpy as np

    from robolearn.data import DatasetReader
    from robolearn.data.sidecar import session_for

    reader = DatasetReader(path)
    info = reader.info
    console.print(f"[bold]{path}[/]: LeRobot {info['codebase_version']}, robot {info.get('robot_type')}, "
                  f"{reader.fps} fps, {reader.num_episodes} episodes, {reader.num_frames} frames "
                  f"({reader.num_frames / max(reader.fps, 1):.1f} s)", highlight=False)
    table = Table(title="features")
    for col in ("feature", "dtype", "shape", "names"):
        table.add_column(col)
    for name, feat in reader.features.items():
        names = feat.get("names")
        table.add_row(name, str(feat["dtype"]), str(feat["shape"]),
                      escape(str(names if not isinstance(names, list) or len(names) <= 6 else names[:6] + ["..."])))
    console.print(table)
    console.print("tasks: " + "; ".join(reader.tasks), highlight=False, markup=False)
    sessions = _sessions(path)
    episodes = Table(title="episodes")
    for col in ("episode", "frames", "seconds", "success", "intervention frames") + (("robolearn task",)
                                                                                       if sessions else ()):
        episodes.add_column(col)
    for i in range(reader.num_episodes):
        data = reader.episode(i)
        n = len(data["frame_index"])
        success = "yes" if "next.success" in data and bool(np.asarray(data["next.success"]).any()) else "no"
        human = str(int(np.asarray(data["intervention"]).sum())) if "intervention" in data else "-"
        session = session_for(sessions, i) if sessions else None
        extra = (escape(session["task"]) if session else "-",) if sessions else ()
        episodes.add_row(str(i), str(n), f"{n / reader.fps:.1f}", success, human, *extra)
    console.print(episodes)


def _sessions(path: Path) -> list[dict]:
    """The recording sessions of meta/robolearn.json, [] when it is absent or unreadable (validate reports why)."""
    from robolearn.data.sidecar import SIDECAR, read_sidecar, sidecar_sessions
    from robolearn.errors import DatasetError

    if not (path / SIDECAR).is_file():
        return []
    try:
        return sidecar_sessions(read_sidecar(path), path / SIDECAR)
    except DatasetError:
        return []


@dataset_app.command("validate")
def dataset_validate(path: Annotated[Path, typer.Argument(help="dataset folder")]) -> None:
    """Check the LeRobot v3 layout, metadata, every data file and every video; one `error:` line per problem and
    exit 2 on any."""
    from robolearn.data import validate_dataset

    problems = validate_dataset(path)
    if problems:
        for problem in problems:
            Console(stderr=True).print(f"[red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    console.print(f"{path}: valid LeRobot v3.0 dataset", highlight=False)


@dataset_app.command("replay")
def dataset_replay(
    path: Annotated[Path, typer.Argument(help="dataset folder")],
    episode: Annotated[int, typer.Option(help="episode index")] = 0,
    video: Annotated[Optional[Path], typer.Option(help="mp4 of the replay (default DATASET/replay/episode_N.mp4)")
                     ] = None,
    no_video: Annotated[bool, typer.Option("--no-video", help="do not render")] = False,
) -> None:
    """Replay an episode's recorded actions in simulation from its first frame, in the task that recorded it; report
    how closely the replay follows the recording and render it with the task's camera."""
    from robolearn.cli.export import output_folder
    from robolearn.teleop.replay import replay_episode

    out = None if no_video else (video or path / "replay" / f"episode_{episode:06d}.mp4")
    if video is not None and not no_video:
        with output_folder(video.parent, "--video folder"):  # checked before the replay
            pass
    result = replay_episode(path, episode, video=out)
    console.print(f"episode {result.episode_index} ({result.task}): {result.frames} frames replayed; max joint "
                  f"deviation {result.max_state_error:.2e} rad, final block deviation "
                  f"{result.final_object_error:.2e} m; success recorded {result.recorded_success}, replayed "
                  f"{result.replayed_success}"
                  + (f"; video {result.video}" if result.video else ""), highlight=False)
