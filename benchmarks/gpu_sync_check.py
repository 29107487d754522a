"""Count the host syncs torch reports in go2-flat steps and a PPO iteration on a GPU (a device check).

`tests/test_device.py` proves on the CPU that the step and the collection loop ask for no device value on the
host; this runs the same code on CUDA under `torch.cuda.set_sync_debug_mode("warn")`, which warns at every
synchronizing torch call (D2H copies, `.item()`, `nonzero`, stream syncs), and writes the counts as JSON:

    python benchmarks/gpu_sync_check.py --backend mjwarp --num-envs 4096 --output sync_mjwarp.json

Syncs inside the simulator's own library (Warp or JAX) are not torch calls and are not seen here; the bench's
steps/s against raw physics shows what they cost.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

from robolearn.learn.config import load_train_cfg
from robolearn.learn.train import make_ppo_runner
from robolearn.sim.tasks import make_task


def _count(fn, cuda: bool) -> tuple[int | None, list[str], float]:
    """(syncs torch warned about while running fn, where (deduplicated), seconds); on the CPU (a dry run of this
    script) nothing is counted."""
    if not cuda:
        t0 = time.perf_counter()
        fn()
        return None, [], time.perf_counter() - t0
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        t0 = time.perf_counter()
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    where = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return len(syncs), [f"{k} x{v}" for k, v in where.most_common(10)], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="mjwarp")
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--device", default="cuda", help="cuda (the check), or cpu (a dry run: nothing counted)")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    report: dict = {"backend": args.backend, "num_envs": args.num_envs,
                    "device": torch.cuda.get_device_name(0) if cuda else "cpu"}

    task = make_task("go2-flat", args.num_envs, backend=args.backend, device=args.device, seed=0)
    actions = 0.5 * torch.randn(8, args.num_envs, task.num_actions, device=args.device)
    for i in range(10):  # warm-up: graph capture / compilation, first resets
        task.step(actions[i % 8])

    def steps() -> None:
        for i in range(args.steps):
            task.step(actions[i % 8])

    n, where, seconds = _count(steps, cuda)
    report["task_steps"] = {"steps": args.steps, "syncs": n, "where": where,
                            "env_steps_per_s": args.steps * args.num_envs / seconds}
    task.close()

    cfg = load_train_cfg("go2-flat", overrides={"device": args.device, "backend": args.backend,
                                                "num_envs": args.num_envs, "max_iterations": 1, "max_time_s": 0})
    for steps_per_env in (12, 24):  # the count must not grow with the steps of an iteration
        cfg.steps_per_env = steps_per_env
        runner = make_ppo_runner(cfg, Path("/tmp/gpu_sync_check") / f"s{steps_per_env}")
        runner.evaluate_fn = None  # the closing evaluation is not part of the training loop
        n, where, seconds = _count(lambda r=runner: r.learn(progress=False), cuda)
        report[f"iteration_{steps_per_env}_steps"] = {"syncs": n, "where": where, "seconds": seconds}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
