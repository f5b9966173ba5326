"""MemTrain's self-supervised memory training: rewrite a bounded memory chunk by chunk, scored by
masked-entity cloze probes read from the final and intermediate memories."""

from memgym.envs.memtrain.env import MemTrainEnv

__all__ = ["MemTrainEnv"]
