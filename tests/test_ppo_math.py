"""PPO's maths on fixed batches, against values computed by hand: the clipped surrogate, the clipped value loss,
the adaptive and linear learning rates, gradient clipping, and bootstrapping on time-outs."""

from __future__ import annotations

import math

import pytest
import torch

from robolearn.learn.models.actor_critic import ActorCritic
from robolearn.learn.ppo import PPO, PPOCfg

T, N, P, A = 4, 3, 5, 2


def _ppo(**cfg) -> PPO:
    torch.manual_seed(0)
    policy = ActorCritic(P, P, A, actor_hidden=[8], critic_hidden=[8], init_std=0.7)
    return PPO(policy, PPOCfg(**{"epochs": 1, "minibatches": 1, **cfg}), num_envs=N, steps_per_env=T,
               generator=torch.Generator().manual_seed(0), total_updates=10)


def _fill(ppo: PPO, seed: int = 1) -> dict[str, torch.Tensor]:
    """A batch whose old log-probs differ from the policy's (ratios away from 1) and fixed advantages/returns."""
    g = torch.Generator().manual_seed(seed)
    s = ppo.storage
    s.actor_obs.copy_(torch.randn(T, N, P, generator=g))
    s.critic_obs.copy_(s.actor_obs)
    s.actions.copy_(torch.randn(T, N, A, generator=g))
    with torch.no_grad():
        dist = ppo.policy.distribution(s.actor_obs.flatten(0, 1))
        logp = dist.log_prob(s.actions.flatten(0, 1)).sum(-1).view(T, N)
        s.mean.copy_(dist.mean.view(T, N, A))
        s.std.copy_(dist.stddev.expand_as(dist.mean).reshape(T, N, A))
    s.log_prob.copy_(logp + 0.3 * torch.randn(T, N, generator=g))  # some ratios outside [0.8, 1.2]
    s.values.copy_(torch.randn(T, N, generator=g))
    s.returns.copy_(s.values + torch.randn(T, N, generator=g))
    s.advantages.copy_(torch.randn(T, N, generator=g))
    return {k: getattr(s, k).flatten(0, 1).clone() for k in ("actor_obs", "actions", "log_prob", "values",
                                                            "returns", "advantages")}


def test_clipped_surrogate_and_value_loss_match_the_formulas():
    ppo = _ppo(clip=0.2)
    b = _fill(ppo)
    with torch.no_grad():
        dist = ppo.policy.distribution(b["actor_obs"])
        ratio = torch.exp(dist.log_prob(b["actions"]).sum(-1) - b["log_prob"])
        value = ppo.policy.value(b["actor_obs"]).squeeze(-1)
    assert ((ratio < 0.8) | (ratio > 1.2)).any() and ((ratio > 0.8) & (ratio < 1.2)).any()  # both branches
    adv = b["advantages"]
    expected_surrogate = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    clipped_v = b["values"] + (value - b["values"]).clamp(-0.2, 0.2)
    expected_value = torch.maximum((value - b["returns"]) ** 2, (clipped_v - b["returns"]) ** 2).mean()
    clip_fraction = ((ratio - 1).abs() > 0.2).float().mean()
    stats = ppo.update()  # one epoch of one minibatch: the logged losses are the first (and only) forward pass
    assert stats["loss/surrogate"] == pytest.approx(float(expected_surrogate), rel=1e-5)
    assert stats["loss/value"] == pytest.approx(float(expected_value), rel=1e-5)
    assert stats["ppo/clip_fraction"] == pytest.approx(float(clip_fraction))
    assert stats["loss/entropy"] == pytest.approx(float(A * (0.5 + 0.5 * math.log(2 * math.pi) + math.log(0.7))),
                                                  rel=1e-5)


@pytest.mark.parametrize(("kl", "factor"), [(0.05, 1 / 1.5), (0.001, 1.5), (0.01, 1.0), (0.0, 1.0)])
def test_adaptive_learning_rate_follows_the_kl(kl, factor):
    ppo = _ppo(learning_rate=1e-3, desired_kl=0.01)
    ppo._adapt_learning_rate(torch.tensor(kl))
    assert ppo.lr == pytest.approx(1e-3 * factor)
    assert all(g["lr"] == ppo.lr for g in ppo.optimizer.param_groups)  # the optimizer steps with it


def test_adaptive_learning_rate_stays_in_its_bounds():
    ppo = _ppo(learning_rate=1e-3, min_lr=5e-4, max_lr=2e-3)
    for _ in range(5):
        ppo._adapt_learning_rate(torch.tensor(1.0))
    assert ppo.lr == 5e-4
    for _ in range(5):
        ppo._adapt_learning_rate(torch.tensor(1e-5))
    assert ppo.lr == 2e-3


def test_linear_schedule_anneals_to_zero_over_the_run():
    ppo = _ppo(schedule="linear", learning_rate=1e-3)
    lrs = []
    for _ in range(10):
        _fill(ppo)
        lrs.append(ppo.update()["ppo/learning_rate"])
    assert lrs == pytest.approx([1e-3 * (1 - i / 10) for i in range(10)])


def test_linear_schedule_continues_after_a_resume_with_a_fresh_budget():
    """A run stopped after 6 of 10 updates and resumed with a budget of 4 goes on annealing from lr0 x 4/10."""
    first = _ppo(schedule="linear", learning_rate=1e-3)
    for _ in range(6):
        _fill(first)
        first.update()
    resumed = _ppo(schedule="linear", learning_rate=1e-3)
    resumed.total_updates = 4  # the resume's own budget
    resumed.load_state_dict(first.state_dict())
    lrs = []
    for _ in range(4):
        _fill(resumed)
        lrs.append(resumed.update()["ppo/learning_rate"])
    assert lrs == pytest.approx([1e-3 * (1 - i / 10) for i in range(6, 10)])


def test_gradients_are_clipped_to_max_grad_norm():
    def grad_norm(max_grad_norm: float) -> float:
        ppo = _ppo(max_grad_norm=max_grad_norm)
        _fill(ppo)
        ppo.update()  # the last minibatch's gradients stay in .grad
        return float(torch.cat([p.grad.flatten() for p in ppo.params if p.grad is not None]).norm())

    unclipped = grad_norm(1e6)
    assert unclipped > 0.05
    assert grad_norm(0.01) == pytest.approx(0.01, rel=1e-4)


def test_time_outs_are_bootstrapped_and_failures_are_not():
    ppo = _ppo(gamma=0.9)
    obs = {"policy": torch.randn(N, P), "privileged": torch.randn(N, P)}
    with torch.inference_mode():
        ppo.act(obs)
        values = ppo._step[-1].clone()
        reward = torch.tensor([1.0, 1.0, 1.0])
        terminated = torch.tensor([False, True, False])
        truncated = torch.tensor([False, False, True])
        ppo.process_env_step(obs, reward, torch.zeros(N), terminated, truncated,
                             {"time_outs": truncated & ~terminated})
    stored = ppo.storage.rewards[0]
    assert stored[0] == 1.0 and stored[1] == 1.0  # running, and failed: no bootstrap
    assert stored[2] == pytest.approx(1.0 + 0.9 * float(values[2]))  # cut by the time limit: + gamma V(s)
    assert ppo.storage.dones[0].tolist() == [0.0, 1.0, 1.0]


def test_the_clipped_surrogate_stays_finite_for_an_action_far_in_the_tail():
    """A safety filter's replacement is stored as executed; far in the policy's tail its log-ratio after an update
    can pass float32's exp overflow (88): the surrogate must stay finite (else the update writes NaN weights)."""
    from robolearn.learn.ppo import clipped_surrogate

    old = torch.tensor([-500.0, -1.0])
    new = torch.tensor([-400.0, -1.0])  # +100 in log space for the tail action
    adv = torch.tensor([-1.0, 1.0])
    loss, ratio = clipped_surrogate(new, old, adv, 0.2)
    assert torch.isfinite(loss) and torch.isfinite(ratio).all()
    assert ratio[1] == 1.0  # on-policy ratios are untouched
    ordinary, _ = clipped_surrogate(torch.tensor([-1.1]), torch.tensor([-1.0]), torch.tensor([2.0]), 0.2)
    assert ordinary == pytest.approx(-(2.0 * torch.exp(torch.tensor(-0.1))).item())
