"""Replay a recorded episode in simulation: rebuild the scene from its first frame in the robolearn task (and
overrides) that recorded that very episode (meta/robolearn.json: a dataset may mix tasks), apply the recorded
actions, and compare the replayed states with the recorded ones (MuJoCo is deterministic: a faithful recording
replays to float32 rounding). Optionally renders the replay to an mp4 with the task's camera."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robolearn.errors import DatasetError
from robolearn.sim.tasks import make_task
from robolearn.sim.tasks.manipulation import ManipulationTask

__all__ = ["ReplayResult", "replay_episode"]


@dataclass
class ReplayResult:
    episode_index: int
    task: str  # the robolearn task that recorded the episode (and replays it)
    frames: int
    max_state_error: float  # rad, recorded vs replayed observation.state over the episode
    final_object_error: float  # m, recorded vs replayed block position at the last frame
    recorded_success: bool
    replayed_success: bool
    video: str | None = None


def replay_episode(root: str | Path, episode: int, *, video: str | Path | None = None) -> ReplayResult:
    from robolearn.data import DatasetReader
    from robolearn.data.sidecar import SIDECAR, episode_session

    reader = DatasetReader(root)
    if not 0 <= episode < reader.num_episodes:
        raise DatasetError(f"{root}: episode {episode} does not exist; the dataset has episodes 0.."
                           f"{reader.num_episodes - 1}")
    rows = [reader.episode_meta(i) for i in range(reader.num_episodes)]
    session = episode_session(root, rows, episode)  # the task that recorded this episode
    data = reader.episode(episode)
    frames = len(data["action"]) if "action" in data else 0
    missing = [k for k in ("observation.state", "observation.environment_state", "action") if k not in data]
    if missing:
        raise DatasetError(f"{root}: episode {episode} lacks {', '.join(missing)}; cannot replay it")
    task = make_task(session["task"], 1, overrides=session.get("task_overrides") or {})
    if not isinstance(task, ManipulationTask):
        task.close()
        raise DatasetError(f"{Path(root) / SIDECAR}: task {session['task']!r} of episode {episode} is not a "
                           f"manipulation task")
    writer = None
    try:
        first = {k: v[0] for k, v in data.items()}
        task.restart(*task.scene_from_frame(first))
        if video is not None:
            import imageio.v2 as imageio

            from robolearn.sim.render import CameraRig

            rig = CameraRig(task)
            camera = next(iter(rig.cameras))
            Path(video).parent.mkdir(parents=True, exist_ok=True)
            writer = imageio.get_writer(video, fps=reader.fps, codec="libx264", quality=7, macro_block_size=8)
        max_err, final_obj, success = 0.0, 0.0, False
        for t in range(frames):
            recorded = np.asarray(data["observation.state"][t])
            max_err = max(max_err, float(np.abs(task.joint_pos[0].numpy() - recorded).max()))
            recorded_block = np.asarray(data["observation.environment_state"][t][:3])
            final_obj = float(np.linalg.norm(task.block_pos[0].numpy() - recorded_block))
            if writer is not None:
                writer.append_data(rig.frames(task, 0)[camera])
            action = torch.tensor(np.asarray(data["action"][t]), dtype=torch.float32).unsqueeze(0)
            _, _, _, _, _, info = task.step(action)
            ended = bool(info["ended"]["mask"][0])  # the env has auto-reset: `task` shows the next episode
            success = bool(info["ended"]["success"][0] > 0.5) if ended else bool(task.success()[0])
            if ended:
                break
        recorded_success = bool(np.asarray(data["next.success"][-1]).any()) if "next.success" in data else False
    finally:
        if writer is not None:
            writer.close()
            rig.close()
        task.close()
    return ReplayResult(episode_index=episode, task=session["task"], frames=frames, max_state_error=max_err,
                        final_object_error=final_obj, recorded_success=recorded_success, replayed_success=success,
                        video=str(video) if video is not None else None)
