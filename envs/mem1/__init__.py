"""MEM1: constant-memory multi-objective QA (``<think>`` state + ``<search>`` / ``<answer>``)."""

from memgym.envs.mem1.compose import ComposedTask, QuestionBank, compose, question_bank
from memgym.envs.mem1.env import Mem1Env

__all__ = ["ComposedTask", "Mem1Env", "QuestionBank", "compose", "question_bank"]
