"""meta/robolearn.json: which robolearn task (and overrides) recorded which episodes of a dataset. LeRobot ignores it.

LeRobot keeps a task per episode: meta/episodes `tasks` and the frames' `task_index` into meta/tasks.parquet, a
short instruction ("push the block to the goal"). To rebuild an episode's scene for replay robolearn also needs the
simulated task and overrides that made it. The sidecar holds one *session* per stretch of episodes recorded with the
same task, overrides and instruction:

    {"format": 2, "fps": 30, "robot": "panda_gripper", "cameras": ["front"],
     "sessions": [{"first_episode": 0, "task": "panda-push", "task_overrides": {},
                   "instruction": "push the block to the goal", "description": "Franka Panda ... pushes a block ..."},
                  {"first_episode": 3, "task": "panda-lift", ...}]}

Episode e belongs to the last session with first_episode <= e, and its LeRobot task is that session's instruction.
A session is written before its first episode is committed, so a crash never leaves a committed episode without
one; sessions that recorded nothing are dropped when the next recording opens the dataset. A format-1 sidecar
(one `task` for the whole dataset, written by older robolearn) reads as one session from episode 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from robolearn.errors import DatasetError

__all__ = ["SIDECAR", "SIDECAR_FORMAT", "read_sidecar", "write_sidecar", "sidecar_sessions", "session_for",
           "episode_session", "sidecar_problems", "add_session"]

SIDECAR = "meta/robolearn.json"
SIDECAR_FORMAT = 2


def read_sidecar(root: str | Path) -> dict[str, Any]:
    """The sidecar as a dict; DatasetError when it is missing or not a JSON object."""
    path = Path(root) / SIDECAR
    if not path.is_file():
        raise DatasetError(f"{path}: missing; this dataset was not recorded by robolearn, so its scene cannot be "
                           f"rebuilt for replay")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def write_sidecar(root: str | Path, data: dict[str, Any]) -> None:
    """Replace the sidecar atomically (write a temporary file, then rename it)."""
    path = Path(root) / SIDECAR
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def sidecar_sessions(data: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The sessions of a sidecar, checked (DatasetError naming the field); a format-1 sidecar gives one session
    from episode 0 with `"legacy": True` and no instruction."""
    if "sessions" not in data:
        task = data.get("task")
        if not isinstance(task, str) or not task:
            raise DatasetError(f"{path}: expected 'sessions' (a list) or, as older robolearn wrote, 'task' (a task "
                               f"name); found neither")
        overrides = data.get("task_overrides") or {}
        if not isinstance(overrides, dict):
            raise DatasetError(f"{path}: task_overrides must be an object, got {overrides!r}")
        return [{"first_episode": 0, "task": task, "task_overrides": overrides, "legacy": True}]
    sessions = data["sessions"]
    if not isinstance(sessions, list) or not sessions:
        raise DatasetError(f"{path}: sessions must be a non-empty list, got {sessions!r}")
    previous = -1
    for i, s in enumerate(sessions):
        where = f"{path}: sessions[{i}]"
        if not isinstance(s, dict):
            raise DatasetError(f"{where}: expected an object, got {s!r}")
        first = s.get("first_episode")
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise DatasetError(f"{where}.first_episode: expected an integer >= 0, got {first!r}")
        if first <= previous:
            raise DatasetError(f"{where}.first_episode: {first} does not come after the previous session's "
                               f"{previous}; sessions must be in increasing episode order")
        previous = first
        for key in ("task", "instruction"):
            if not isinstance(s.get(key), str) or not s[key].strip():
                raise DatasetError(f"{where}.{key}: expected a non-empty string, got {s.get(key)!r}")
        if not isinstance(s.get("task_overrides", {}), dict):
            raise DatasetError(f"{where}.task_overrides: expected an object, got {s['task_overrides']!r}")
    return sessions


def session_for(sessions: list[dict[str, Any]], episode: int) -> dict[str, Any] | None:
    """The session that recorded `episode` (None before the first session: episodes recorded by something else)."""
    found = None
    for s in sessions:
        if s["first_episode"] <= episode:
            found = s
    return found


def _ranges(episodes: list[int]) -> str:
    """[0, 1, 2, 5] -> 'episodes 0-2, 5'."""
    parts: list[str] = []
    start = prev = episodes[0]
    for e in [*episodes[1:], None]:
        if e is not None and e == prev + 1:
            prev = e
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if e is not None:
            start = prev = e
    return ("episode " if len(episodes) == 1 else "episodes ") + ", ".join(parts)


def _episode_tasks(row: dict[str, Any]) -> list[str]:
    tasks = row.get("tasks")
    return list(tasks) if isinstance(tasks, list) else []


def _legacy_problem(path: Path, session: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
    by_task: dict[str, list[int]] = {}
    for row in rows:
        for task in _episode_tasks(row):
            by_task.setdefault(task, []).append(int(row["episode_index"]))
    if len(by_task) <= 1:
        return None
    found = "; ".join(f"{task!r} in {_ranges(eps)}" for task, eps in by_task.items())
    return (f"{path}: names one robolearn task ({session['task']!r}) for the whole dataset, but its episodes have "
            f"{len(by_task)} different LeRobot tasks ({found}): episodes of another task were appended by an older "
            f"robolearn, so which task made which episode is lost")


def _episode_problem(path: Path, session: dict[str, Any], row: dict[str, Any]) -> str | None:
    tasks = _episode_tasks(row)
    if tasks != [session["instruction"]]:
        return (f"{path}: episode {row['episode_index']} belongs to the session recorded as {session['task']!r} "
                f"(from episode {session['first_episode']}, instruction {session['instruction']!r}), but "
                f"meta/episodes gives its tasks as {tasks!r}")
    return None


def episode_session(root: str | Path, rows: list[dict[str, Any]], episode: int) -> dict[str, Any]:
    """The session that recorded `episode` (rows: the dataset's meta/episodes rows), or DatasetError when the
    sidecar does not cover it or contradicts the dataset's own task of that episode."""
    path = Path(root) / SIDECAR
    sessions = sidecar_sessions(read_sidecar(root), path)
    session = session_for(sessions, episode)
    if session is None:
        raise DatasetError(f"{path}: no session covers episode {episode} (the first starts at episode "
                           f"{sessions[0]['first_episode']}); it was not recorded by robolearn, so its scene cannot "
                           f"be rebuilt")
    problem = (_legacy_problem(path, session, rows) if session.get("legacy")
               else _episode_problem(path, session, rows[episode]))
    if problem is not None:
        raise DatasetError(problem)
    return session


def sidecar_problems(root: str | Path, rows: list[dict[str, Any]]) -> list[str]:
    """What is inconsistent between the sidecar and the dataset's episodes (rows: meta/episodes rows sorted by
    episode_index); [] without a sidecar (a dataset not recorded by robolearn)."""
    root = Path(root)
    path = root / SIDECAR
    if not path.exists():
        return []
    try:
        sessions = sidecar_sessions(read_sidecar(root), path)
    except DatasetError as exc:
        return [str(exc)]
    if sessions[0].get("legacy"):
        problem = _legacy_problem(path, sessions[0], rows)
        return [problem] if problem else []
    problems = []
    for row in rows:
        session = session_for(sessions, int(row["episode_index"]))
        problem = None if session is None else _episode_problem(path, session, row)
        if problem is not None:
            problems.append(problem)
    if len(problems) > 3:  # one line per bad episode is noise past a few
        problems = [*problems[:3], f"{path}: ... and {len(problems) - 3} more episodes whose tasks differ from "
                                   f"their sessions' instructions"]
    return problems


def add_session(root: str | Path, rows: list[dict[str, Any]], session: dict[str, Any],
                header: dict[str, Any]) -> list[dict[str, Any]]:
    """Record that the episodes from len(rows) on are recorded by `session` (task, task_overrides, instruction,
    description), and return the sidecar's sessions. Call it with the dataset's writer open (its lock keeps two
    recorders apart) and before the session's first episode is committed. Sessions that recorded nothing are
    dropped; the last session is reused when it is the same recording setup. A format-1 sidecar is upgraded
    (DatasetError when its episodes already mix tasks: the dataset is inconsistent, see `robolearn dataset
    validate`)."""
    root = Path(root)
    path = root / SIDECAR
    n = len(rows)
    sessions: list[dict[str, Any]] = []
    if path.is_file():
        sessions = sidecar_sessions(read_sidecar(root), path)
        if sessions[0].get("legacy"):
            problem = _legacy_problem(path, sessions[0], rows)
            if problem is not None:
                raise DatasetError(f"{problem}; refusing to append to it")
            tasks = [t for row in rows for t in _episode_tasks(row)]
            legacy = {k: v for k, v in sessions[0].items() if k != "legacy"}
            sessions = [{**legacy, "instruction": tasks[0]}] if tasks else []
        sessions = [s for s in sessions if s["first_episode"] < n]  # a session that recorded nothing
    same = ("task", "task_overrides", "instruction")
    if not sessions or any(sessions[-1].get(k, {} if k == "task_overrides" else None) != session[k] for k in same):
        sessions.append({"first_episode": n, **session})
    write_sidecar(root, {"format": SIDECAR_FORMAT, **header, "sessions": sessions})
    return sessions
