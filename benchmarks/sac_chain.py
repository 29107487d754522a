"""How well DSRL's SAC critic learns a value it should know exactly: a chain whose rewards ignore the action.

Each of 32 envs walks k = 0, 1, ..., T-1 and ends its episode (terminal) there; the observation is a fixed smooth
embedding of k and the action (the "noise", DIMS numbers) changes nothing. `--reward constant`: 0.1 per step, so
Q(k) = 0.1 (1 - g^(T-k)) / (1 - g); `--reward sparse`: -1 per step and 0 on the last, as DSRL's success reward. Prints
the critic's Q at the actor's noise against the true value every 40 iterations (4 steps of 32 envs, then
`dsrl.gradient_steps` updates, as `robolearn finetune --method dsrl` iterates).

    python benchmarks/sac_chain.py --dims 64 --reward constant --iterations 400
    python benchmarks/sac_chain.py --dims 16 --reward sparse --length 30 --set n_step=5
"""

from __future__ import annotations

import argparse
import time

import torch

from robolearn.cli.app import parse_sets
from robolearn.config import from_dict
from robolearn.learn.dsrl import SAC, DSRLCfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, default=16, help="noise (action) dimensions")
    parser.add_argument("--reward", choices=["constant", "sparse"], default="sparse")
    parser.add_argument("--length", type=int, default=75, help="steps per episode (T)")
    parser.add_argument("--iterations", type=int, default=160)
    parser.add_argument("--set", action="append", default=[], help="a DSRLCfg field: key=value")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = from_dict(DSRLCfg, {"random_steps": 1000, "gradient_steps": 64, **parse_sets(args.set)}, where="--set")
    n, obs_dim, T = 32, 8, args.length
    sac = SAC(cfg, obs_dim, args.dims, n, "cpu")
    k = torch.randint(0, T, (n,))
    proj = torch.randn(1, obs_dim)

    def observe(k: torch.Tensor) -> torch.Tensor:
        return torch.tanh((k.float() / T)[:, None] * proj * 3)

    steps_left = T - torch.arange(0, T, 5).float()  # rewards still to come at k = 0, 5, ...
    g = cfg.gamma
    if args.reward == "constant":
        true = 0.1 * (1 - g**steps_left) / (1 - g)
    else:
        true = -(1 - g ** (steps_left - 1)) / (1 - g)
    start = time.perf_counter()
    for it in range(args.iterations):
        for _ in range(4):
            obs = observe(k)
            with torch.inference_mode():
                sac.act({"policy": obs})
            k = k + 1
            done = k >= T
            reward = torch.full((n,), 0.1) if args.reward == "constant" else torch.where(done, 0.0, -1.0)
            k[done] = 0
            sac.process_env_step({"policy": observe(k)}, reward, torch.zeros(n), done, torch.zeros(n, dtype=bool), {})
        stats = sac.update()
        if it % 40 == 39:
            with torch.no_grad():
                o = observe(torch.arange(0, T, 5))
                q = sac.critics[0](torch.cat((o, sac.actor(o)), -1)).squeeze(-1)
            print(f"iteration {it + 1} ({sac.gradient_steps_done} updates, {time.perf_counter() - start:.0f} s): "
                  f"mean |Q - true| {(q - true).abs().mean():.2f}; entropy {stats['dsrl/entropy']:.1f}, alpha "
                  f"{stats['dsrl/alpha']:.3f}; Q {[round(v, 1) for v in q.tolist()]}; "
                  f"true {[round(v, 1) for v in true.tolist()]}", flush=True)


if __name__ == "__main__":
    main()
