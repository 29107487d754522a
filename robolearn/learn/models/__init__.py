"""Networks: the actor-critic and its normalizer (PPO), and the history students (distillation)."""

from robolearn.learn.models.actor_critic import ActorCritic, EmpiricalNormalizer, TeacherActorCritic, build_policy, mlp

__all__ = ["ActorCritic", "EmpiricalNormalizer", "TeacherActorCritic", "build_policy", "mlp"]
