"""A diffusion policy bundle (robolearn export of a panda-push diffusion run) through the deploy runtime on the
Panda twin with the block, in real time: success rate with a 95% interval, loop timing and inference latency.

Image policies see the twin's camera, rendered in its own process (`robolearn.twin.camera`). Each episode: a
fresh `TabletopTwin` placed as the task's reset draws it (block pose, goal; seeds seed..), the
runtime stands (0.2 s: the twin starts in the default pose), runs the policy for the task's episode length with
the goal as its command, and the episode succeeds when the block's center comes within the task's
success_distance of the goal (Diffusion Policy's protocol, as `robolearn eval`). Overruns are control ticks that
ended after their deadline during Run. `--baseline N` first runs N episodes with a policy that returns zeros at
once: the overruns the machine and the twin's physics cause without any inference.

    python benchmarks/diffusion_twin.py runs/push/export --episodes 20 --baseline 5 [--execute 4] [--json out.json]
        [--video v.mp4] [--sampler ddim|warm]

The video's rendering runs in the control loop (a few ms per frame): episode 0's timing is not representative
when `--video` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import numpy as np

from robolearn.config import from_dict, merge, to_dict
from robolearn.deploy.bundle import load_bundle
from robolearn.deploy.profile import HardwareProfile, load_profile
from robolearn.deploy.runtime import DeployRuntime
from robolearn.learn.eval_run import wilson95
from robolearn.sim.render import write_mp4
from robolearn.sim.tasks import load_task_cfg
from robolearn.twin.tabletop import TabletopTwin, sample_scenes


class TwinVideo:
    """Frames of the twin at the policy rate, from a fixed camera over the table (collision shapes: the twin's
    model carries no visual meshes)."""

    def __init__(self, robot: TabletopTwin, every: int) -> None:
        import mujoco

        self.robot, self.every, self.frames = robot, every, []
        self.renderer = mujoco.Renderer(robot.model, height=360, width=480)
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.lookat[:] = [0.5, 0.0, 0.1]
        self.camera.distance, self.camera.azimuth, self.camera.elevation = 1.3, 180.0, -35.0

    def __call__(self, rt: DeployRuntime) -> None:
        if rt.ticks % self.every == 0:
            self.renderer.update_scene(self.robot.data, camera=self.camera)
            self.frames.append(self.renderer.render().copy())


def episode(bundle, profile: HardwareProfile, block: np.ndarray, goal: np.ndarray, seconds: float, success_m: float,
            policy=None, video: str | None = None) -> dict:
    robot = TabletopTwin(bundle.manifest.task, 1.0 / profile.control_hz, joint_names=profile.joint_names)
    robot.place(block, goal)
    recorder = TwinVideo(robot, round(profile.control_hz / bundle.manifest.policy_hz)) if video else None
    m = bundle.manifest
    cameras = {name: robot.camera(name).read for name in m.camera_names}  # rendered by the twin in another process
    observes = any(t.name == "object_pose" for t in m.observation)
    rt = DeployRuntime(bundle, profile, robot, objects=robot.object_pose if observes else None, policy=policy,
                       cameras=cameras)
    try:
        rt.tick()
        assert rt.stand() == "stand", "the twin refused to stand"
        rt.spin(profile.stand.duration_s + 0.05)
        rt.set_command(goal)
        assert rt.run() == "run", "the twin refused to run"
        rt.stats.reset()
        best = [robot.goal_distance()]

        def on_tick(r: DeployRuntime) -> None:
            best[0] = min(best[0], robot.goal_distance())
            if recorder is not None:
                recorder(r)

        rt.spin(seconds, on_tick=on_tick)
        if recorder is not None:
            write_mp4(video, recorder.frames, bundle.manifest.policy_hz)
        timing = rt.stats.summary()
        calls = getattr(bundle.policy.graph, "calls", 0)
        return {"success": best[0] < success_m, "best_goal_distance_m": round(best[0], 4),
                "final_goal_distance_m": round(robot.goal_distance(), 4), "mode": str(rt.mode),
                "trips": [t.reason for t in rt.trips], "overruns": int(timing["overruns"]),
                "ticks": int(timing["ticks"]), "busy_ticks": int(timing["busy_ticks"]),
                "overruns_busy": int(timing["overruns_busy"]), "compute_p99_ms": round(timing["compute_p99_ms"], 3),
                "compute_max_ms": round(timing["compute_max_ms"], 3),
                "period_err_p99_ms": round(timing["period_err_p99_ms"], 3),
                "policy_p99_ms": round(timing.get("policy_p99_ms", 0.0), 3),
                "policy_max_ms": round(timing.get("policy_max_ms", 0.0), 3), "denoiser_calls": calls}
    finally:
        rt.close()
        robot.close()


def busy_split(results: list[dict]) -> dict:
    """Overrun rates of the ticks with inference in flight and of the others: inference adds overruns only where
    the first is above the second."""
    busy = sum(r["busy_ticks"] for r in results)
    idle = sum(r["ticks"] for r in results) - busy
    over_busy = sum(r["overruns_busy"] for r in results)
    over_idle = sum(r["overruns"] for r in results) - over_busy
    return {"busy_ticks": busy, "overruns_busy": over_busy, "idle_ticks": idle, "overruns_idle": over_idle,
            "overrun_rate_busy": over_busy / max(busy, 1), "overrun_rate_idle": over_idle / max(idle, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--execute", type=int, default=0, help="actions executed per chunk (default: the bundle's)")
    ap.add_argument("--sampler", choices=["ddim", "warm"], default=None, help="default: the bundle's")
    ap.add_argument("--baseline", type=int, default=0, help="first N episodes with an instant zero policy")
    ap.add_argument("--json", default=None)
    ap.add_argument("--video", default=None, help="an mp4 of the first episode (rendering costs loop time)")
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    graph = bundle.manifest.policy
    if args.execute:
        graph.chunk.execute = args.execute
        bundle.policy.execute = bundle.policy.graph.execute = args.execute
    if args.sampler:
        bundle.policy.graph.d = dataclasses.replace(graph.diffusion, sampler=args.sampler)
    profile = load_profile("panda_gripper")
    profile = from_dict(HardwareProfile, merge(to_dict(profile), {"stand": {"duration_s": 0.2}}), where="benchmark")
    _, task_cfg = load_task_cfg(bundle.manifest.task)
    blocks, goals = sample_scenes(bundle.manifest.task, args.episodes, args.seed)
    seconds, success_m = task_cfg.episode_length_s, task_cfg.success_distance
    out = {"bundle": args.bundle, "execute": bundle.policy.execute, "sampler": bundle.policy.graph.d.sampler,
           "control_hz": profile.control_hz, "policy_hz": bundle.manifest.policy_hz}
    if args.baseline:
        base = [episode(bundle, profile, blocks[i % len(blocks)], goals[i % len(goals)], seconds, success_m,
                        policy=lambda obs: np.zeros(4)) for i in range(args.baseline)]
        out["baseline"] = {"episodes": len(base), "overruns": sum(b["overruns"] for b in base),
                           "ticks": sum(b["ticks"] for b in base), **busy_split(base),
                           "compute_p99_ms_median": statistics.median(b["compute_p99_ms"] for b in base)}
        print("baseline (zero policy, no inference):", out["baseline"])
    results = []
    start = time.time()
    for i in range(args.episodes):
        r = episode(bundle, profile, blocks[i], goals[i], seconds, success_m,
                    video=args.video if i == 0 else None)
        results.append(r)
        print(f"episode {i}: {'success' if r['success'] else 'fail   '} best {r['best_goal_distance_m']:.3f} m, "
              f"overruns {r['overruns']}/{r['ticks']}, policy p99 {r['policy_p99_ms']:.1f} ms, "
              f"compute p99 {r['compute_p99_ms']:.2f} ms, trips {r['trips'] or 'none'}", flush=True)
    ok = sum(r["success"] for r in results)
    low, high = wilson95(ok, len(results))
    out["summary"] = {
        "episodes": len(results), "success": ok / len(results), "success_ci95": [round(low, 4), round(high, 4)],
        "overruns": sum(r["overruns"] for r in results), "ticks": sum(r["ticks"] for r in results),
        **busy_split(results),
        "episodes_with_trips": sum(bool(r["trips"]) for r in results),
        "compute_p99_ms_median": statistics.median(r["compute_p99_ms"] for r in results),
        "policy_p99_ms_median": statistics.median(r["policy_p99_ms"] for r in results),
        "policy_max_ms": max(r["policy_max_ms"] for r in results), "wall_s": round(time.time() - start, 1)}
    out["episodes"] = results
    print(json.dumps(out["summary"], indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
