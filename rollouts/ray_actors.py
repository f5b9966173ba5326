"""The two Ray actor classes of :class:`memgym.rollouts.ray_runner.RayRolloutRunner`.

They are plain classes (wrapped with ``ray.remote`` by the runner) so that they can be unit
tested and benchmarked in-process too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import gymnasium as gym
import ray

import memgym  # noqa: F401  (registers the envs in the actor's process)
from memgym.engine import Completion
from memgym.errors import PolicyError
from memgym.rollouts.policy import Policy

if TYPE_CHECKING:  # torch loads only in engine actors, not in env workers
    import torch

    from memgym.rollouts.weight_sync import WeightReceiver

StepResult = tuple[str, float, bool, bool, dict]  # obs, reward, terminated, truncated, info


class EnvWorker:
    """Holds ``num_envs`` envs of one id and steps a batch of them per call.

    Args:
        env_id: Registered env id.
        env_kwargs: ``gymnasium.make`` keyword arguments.
        num_envs: Envs (slots) held.
    """

    def __init__(self, env_id: str, env_kwargs: dict, num_envs: int) -> None:
        self.envs = [gym.make(env_id, **env_kwargs) for _ in range(num_envs)]
        self.instance = uuid.uuid4().hex  # a restarted actor is a new instance, fresh envs

    def run(self, steps: Sequence[tuple[int, str]], resets: Sequence[tuple[int, int]],
            instance: str | None = None
            ) -> tuple[list[StepResult], list[tuple[str, dict]], float, str, str] | None:
        """Step some slots, then reset others (one remote call for the whole batch).

        Args:
            steps: ``(slot, action text)`` pairs.
            resets: ``(slot, seed)`` pairs (slots disjoint from ``steps``).
            instance: The instance the caller's episodes live in (from an earlier result);
                None accepts any.

        Returns:
            ``(step results, (obs, info) per reset, seconds spent in env calls, node id,
            instance)``; the node id (Ray's hex id, or "" outside Ray) says where the work ran.
            None, doing nothing, when ``instance`` is not this one: the actor was restarted
            and the caller's episodes are gone.
        """
        if instance is not None and instance != self.instance:
            return None
        tick = time.perf_counter()
        stepped = [self.envs[slot].step(action) for slot, action in steps]
        reset = [self.envs[slot].reset(seed=int(seed)) for slot, seed in resets]
        seconds = time.perf_counter() - tick
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        return stepped, reset, seconds, node, self.instance

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()


class PolicyActor:
    """Runs one policy (an LLM engine or a scripted baseline) built inside the actor.

    Args:
        factory: No-argument callable returning the :class:`memgym.rollouts.Policy` (pickled
            to the actor, so a model loads where the actor runs, e.g. on its GPU).
    """

    def __init__(self, factory: Callable[[], Policy]) -> None:
        self.policy = factory()
        self.receiver: WeightReceiver | None = None

    def name(self) -> str:
        """The policy's name (recorded in trajectories)."""
        return self.policy.name

    def act(self, observations: Sequence[str], infos: Sequence[dict]
            ) -> tuple[list[Completion], float]:
        """``policy.act`` and the seconds it took."""
        tick = time.perf_counter()
        completions = self.policy.act(observations, infos)
        return completions, time.perf_counter() - tick

    def load_state_dict(self, state_dict: dict) -> None:
        """Copy trainer weights into the policy's engine, e.g. after an optimizer step (the
        dict's tensors arrive through the object store): a vLLM engine's ``load_weights``, or
        an HF engine's ``model.load_state_dict``.

        Raises:
            PolicyError: The policy has no engine with weights (e.g. a scripted baseline).
        """
        self._loader()(state_dict.items())

    def check_weights(self) -> None:
        """Raise unless the engine can take weights (the runner calls it before anyone blocks
        in a weight-sync group).

        Raises:
            PolicyError: The policy has no engine with weights (e.g. a scripted baseline).
        """
        self._loader()

    def _loader(self) -> Callable[[Iterable[tuple[str, torch.Tensor]]], None]:
        """How ``(name, tensor)`` pairs reach the engine (see :meth:`load_state_dict`)."""
        engine = getattr(self.policy, "engine", None)
        if hasattr(engine, "load_weights"):
            return engine.load_weights
        model = getattr(engine, "model", None)
        if model is None:
            raise PolicyError(f"policy {self.policy.name!r} has no engine.model to load "
                              f"weights into")
        return lambda items: model.load_state_dict(dict(items))

    def join_weight_sync(self, host: str, port: int, rank: int, size: int,
                         backend: str) -> None:
        """Join the trainer's weight-sync group as ``rank`` (blocks until all ranks joined;
        see :mod:`memgym.rollouts.weight_sync`).

        Raises:
            PolicyError: The policy has no engine with weights.
        """
        from memgym.rollouts.weight_sync import WeightReceiver

        self.check_weights()
        self.leave_weight_sync()
        self.receiver = WeightReceiver(host, port, rank, size, backend)

    def receive_weights(self) -> int:
        """Receive the trainer's next broadcast into the engine, streamed tensor by tensor.

        Returns:
            Tensors received.

        Raises:
            PolicyError: Not in a weight-sync group (e.g. the actor was restarted), or the
                policy has no engine with weights.
        """
        receiver = self.receiver
        if receiver is None:
            raise PolicyError("this engine actor is in no weight-sync group (restarted "
                              "actors lose theirs)")
        count = 0

        def counted() -> Iterable[tuple[str, torch.Tensor]]:
            nonlocal count
            for item in receiver.receive():
                count += 1
                yield item

        self._loader()(counted())
        return count

    def leave_weight_sync(self) -> None:
        """Leave the weight-sync group, if any."""
        if self.receiver is not None:
            self.receiver.close()
        self.receiver = None
