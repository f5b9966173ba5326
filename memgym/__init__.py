"""memgym: a reinforcement-learning gym for learned memory policies of LLM agents."""

from memgym import envs  # registers the environments with gymnasium
from memgym.segments import build_segments
from memgym.trajectory import Segment, Step, Trajectory, load_trajectories, write_trajectories

__all__ = ["Segment", "Step", "Trajectory", "build_segments", "envs", "load_trajectories",
           "write_trajectories"]
__version__ = "0.1.0"
