"""Segment-aware trainers: advantage estimators, loss pieces and the GRPO trainer."""

from memgym.batch import RolloutBatch, group_ids
from memgym.config.trainer import GRPOConfig, TrainerConfig
from memgym.trainers.advantages import (
                                        ESTIMATORS,
                                        dr_grpo_advantages,
                                        expand_to_segments,
                                        grpo_advantages,
                                        memory_token_advantages,
                                        reinforce_pp_advantages,
                                        rloo_advantages,
                                        trajectory_advantages,
)
from memgym.trainers.grpo import GRPOTrainer, SegmentBatch
from memgym.trainers.losses import (
                                        KL_ESTIMATORS,
                                        LOSS_AGG_MODES,
                                        WEIGHTINGS,
                                        clipped_surrogate,
                                        kl_divergence,
                                        token_coefficients,
                                        update_coefficients,
)

__all__ = [
    "ESTIMATORS", "KL_ESTIMATORS", "LOSS_AGG_MODES", "WEIGHTINGS", "GRPOConfig", "GRPOTrainer",
    "RolloutBatch", "SegmentBatch", "TrainerConfig", "clipped_surrogate", "dr_grpo_advantages",
    "expand_to_segments", "group_ids", "grpo_advantages", "kl_divergence",
    "memory_token_advantages", "reinforce_pp_advantages", "rloo_advantages",
    "token_coefficients", "trajectory_advantages", "update_coefficients",
]
