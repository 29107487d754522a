"""Tasks built from terms: observation groups of named terms, reward and cost terms, each one method plus one
line of config; clear errors for names that do not exist; costs returned next to the reward and summed per
episode."""

from __future__ import annotations

import pytest
import torch

from robolearn.errors import ConfigError
from robolearn.sim.tasks import load_task_cfg, make_task
from robolearn.sim.tasks.locomotion import LocomotionTask

STILL = {"randomization": {"push_interval_s": 0.0}}


def test_the_default_groups_are_the_documented_vectors():
    task = make_task("go2-flat", 4, seed=0, overrides={**STILL, "noise_scale": 0.0})
    try:
        obs = task.reset()
        expected = torch.cat([task.base_ang_vel * 0.25, task.projected_gravity, task.commands * torch.tensor(
            [2.0, 2.0, 0.25]), task.joint_pos - task.default_joint_pos, task.joint_vel * 0.05, task.actions], dim=1)
        torch.testing.assert_close(obs["policy"], expected)
        torch.testing.assert_close(obs["privileged"][:, :45], expected)  # the critic's group starts with it
        torch.testing.assert_close(obs["privileged"][:, 45:48], task.base_lin_vel * 2.0)
    finally:
        task.close()


def test_noise_goes_to_the_policy_group_only_and_scales_with_noise_scale():
    task = make_task("go2-flat", 64, seed=0, overrides=STILL)
    try:
        obs = task.reset()
        noise = obs["policy"] - obs["privileged"][:, :45]  # privileged holds the clean policy terms
        assert noise[:, 0:3].abs().max() <= 0.2 * 0.25 + 1e-6 and noise[:, 0:3].abs().max() > 0.02  # ang vel
        assert noise[:, 6:9].abs().max() == 0  # the command is not measured: no noise
        assert noise[:, 24:36].abs().max() <= 1.5 * 0.05 + 1e-6  # joint velocities: 1.5 rad/s x scale 0.05
    finally:
        task.close()


def test_a_new_observation_group_and_term_from_config_alone():
    extra = {"observations": {
        "policy": [{"term": "base_ang_vel", "scale": 0.25}, {"term": "projected_gravity"},
                   {"term": "velocity_command", "scale": [2.0, 2.0, 0.25]}, {"term": "joint_pos"},
                   {"term": "joint_vel", "scale": 0.05}, {"term": "last_action"},
                   {"term": "base_height"}],  # one more line: the policy reads the base height too
        "contacts": [{"term": "foot_contacts"}, {"term": "friction"}],  # a group of its own
    }}
    task = make_task("go2-flat", 3, seed=0, overrides={**STILL, **extra})
    try:
        obs = task.reset()
        assert obs["policy"].shape == (3, 46) and obs["contacts"].shape == (3, 5)
        assert obs["privileged"].shape == (3, 46 + 11)  # the default critic group includes the new policy group
        assert [name for name, *_ in task.policy_terms()][-1] == "base_height"
    finally:
        task.close()


@pytest.mark.parametrize(("observations", "message"), [
    ({"policy": [{"term": "joint_angles"}]}, "unknown obs term 'joint_angles'; valid terms: .*joint_pos"),
    ({"policy": [{"term": "joint_pos", "group": "privileged"}]}, "give either term: NAME or group: NAME"),
    ({"policy": [{"group": "privileged"}]}, "includes group 'privileged', which must come before it"),
    ({"policy": [{"term": "joint_pos", "scale": [1.0, 2.0]}]}, "joint_pos has 12 values but 2 scales"),
    ({"policy": []}, "observation group 'policy' is empty"),
])
def test_bad_observation_configs_name_what_is_wrong(observations, message):
    with pytest.raises(ConfigError, match=message):
        make_task("go2-flat", 2, overrides={"observations": observations})


def test_costs_come_next_to_the_reward_and_are_summed_per_episode():
    task = make_task("go2-flat", 4, seed=0, overrides={**STILL, "episode_length_s": 0.2})
    try:
        _, _, cost, _, _, info = task.step(torch.zeros(4, 12))
        assert cost.shape == (4,) and (cost >= 0).all()
        assert set(info["costs"]) == {"fall", "base_contact", "torque_saturation", "joint_limit"}
        qpos = task.sim.qpos.clone()
        qpos[0, 3:7] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # upside down: it falls
        qpos[0, 2] = 0.15
        task.sim.set_state(torch.tensor([0]), qpos[:1], task.sim.qvel[:1].clone())
        _, _, cost, terminated, _, info = task.step(torch.zeros(4, 12))
        assert terminated[0] and info["costs"]["fall"][0] == 1 and not info["costs"]["fall"][1:].any()
        assert cost[0] >= 1.0  # weight 1 on fall
        stats = task.episode_stats()
        assert stats["episodes"] == 1 and stats["cost/fall"] == 1.0 and stats["cost"] >= 1.0
    finally:
        task.close()


class SpeedCostTask(LocomotionTask):
    """A task type with one more cost term: the whole addition is this method and one line of config."""

    def _cost_over_speed(self) -> torch.Tensor:
        return (self.base_lin_vel[:, :2].norm(dim=1) > 1.5).float()


def test_a_new_cost_term_is_one_method_and_one_config_line():
    cls, cfg = load_task_cfg("go2-flat", {**STILL, "costs": {"over_speed": 2.0}})
    assert cls is LocomotionTask
    task = SpeedCostTask(cfg, 3, seed=0, name="go2-flat")
    try:
        qvel = task.sim.qvel.clone()
        qvel[1, 0] = 3.0  # env 1 shoved forward at 3 m/s
        task.sim.set_state(torch.tensor([1]), task.sim.qpos[1:2].clone(), qvel[1:2])
        _, _, cost, _, _, info = task.step(torch.zeros(3, 12))
        assert info["costs"]["over_speed"].tolist() == [0.0, 1.0, 0.0] and cost[1] == 2.0
    finally:
        task.close()
    with pytest.raises(ConfigError, match="unknown cost term 'over_speed'; valid terms: base_contact, fall"):
        make_task("go2-flat", 2, overrides={"costs": {"over_speed": 1.0}})
    with pytest.raises(ConfigError, match="costs.fall: a cost weight must be >= 0"):
        make_task("go2-flat", 2, overrides={"costs": {"fall": -1.0}})
