"""Networks and learning algorithms (PPO), the on-policy runner, and evaluation."""

__all__: list[str] = []
