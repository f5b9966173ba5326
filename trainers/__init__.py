"""Segment-aware trainers."""

from memgym.trainers.advantages import expand_to_segments, grpo_advantages
from memgym.trainers.grpo import GRPOConfig, GRPOTrainer, SegmentBatch

__all__ = ["GRPOConfig", "GRPOTrainer", "SegmentBatch", "expand_to_segments", "grpo_advantages"]
