"""ProactRL's proactive retrieval: answer a task stream from context or retrieve from memory
(``-v2``: from a typed experience store of facts, episodes and skills)."""

from memgym.envs.proactive.env import ProactiveRetrievalEnv
from memgym.envs.proactive.store import SKILLS, ExperienceStore, Skill
from memgym.envs.proactive.tasks import Task, build_tasks

__all__ = ["SKILLS", "ExperienceStore", "ProactiveRetrievalEnv", "Skill", "Task", "build_tasks"]
