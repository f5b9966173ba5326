"""ProactRL's proactive retrieval: answer a task stream from context or retrieve from memory."""

from memgym.envs.proactive.env import ProactiveRetrievalEnv
from memgym.envs.proactive.tasks import Task, build_tasks

__all__ = ["ProactiveRetrievalEnv", "Task", "build_tasks"]
