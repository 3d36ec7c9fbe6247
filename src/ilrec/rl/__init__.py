"""Reinforcement learning with verifiable rewards, the pieces below the trainer: constrained
rollouts (``rollouts``) and rollout rewards (``rewards``). The GRPO objective
(:mod:`ilrec.training.objectives.grpo`) and stage (:mod:`ilrec.alignment.grpo`) use them."""
