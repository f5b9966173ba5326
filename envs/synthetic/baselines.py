"""Scripted baselines for the memory manager on the synthetic sources.

The oracle executes the *known optimal* op sequence of a state-tracking stream: one memory
``"<key>: <value>"`` per key (KV: ``"Alice's PIN: 4821"``; bAbI: ``"Mary: kitchen"``), ADDed at
the key's first statement and UPDATEd in place at every later one, so the bank always holds
exactly the current state and nothing stale. It is stateless: it parses the new item from
``info["turn"]`` and finds the key's memory id among the related memories of the observation
(the bank holds one short memory per key and a new value never equals another key's current
value, so BM25 ranks the key's own memory first). The heuristics and the no-op come from
:mod:`memgym.envs.memory_manager.baselines`; they work on any source.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memgym.codecs import Mem0JsonCodec
from memgym.engine import Completion
from memgym.envs.memory_manager.baselines import Mem0LikePolicy, NoopPolicy, StoreAllPolicy
from memgym.envs.synthetic.babi import Move, Swap, parse_event
from memgym.envs.synthetic.kv import parse_fact
from memgym.ops import Add, MemoryOp, Update

_CODEC = Mem0JsonCodec()
_RELATED = re.compile(r"^\[(\w+)\] (.+): (\S+)$", re.MULTILINE)


def _state(observation: str) -> dict[str, tuple[str, str]]:
    """Key → (memory id, value) of the ``"<key>: <value>"`` memories shown as related."""
    return {key: (mid, value)
            for mid, key, value in _RELATED.findall(observation.split("Related memories:")[-1])}


def _set(state: dict[str, tuple[str, str]], key: str, value: str) -> MemoryOp:
    text = f"{key}: {value}"
    return Update(state[key][0], text) if key in state else Add(text)


class StateOraclePolicy:
    """Optimal ops for :class:`~memgym.envs.synthetic.KeyValueSource` and
    :class:`~memgym.envs.synthetic.BabiSource` streams: ADD ``"<key>: <value>"`` at a key's
    first fact, UPDATE that memory at later facts (a swap UPDATEs both people); no op on text it
    cannot parse."""

    name = "oracle"

    @staticmethod
    def _ops(observation: str, text: str) -> list[MemoryOp]:
        state = _state(observation)
        if fact := parse_fact(text):
            return [_set(state, *fact)]
        event = parse_event(text)
        if isinstance(event, Move):
            return [_set(state, event.entity, event.location)]
        if isinstance(event, Swap) and event.first in state and event.second in state:
            return [_set(state, event.first, state[event.second][1]),
                    _set(state, event.second, state[event.first][1])]
        return []

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_CODEC.encode(self._ops(obs, info["turn"]["text"])))
                for obs, info in zip(observations, infos, strict=True)]


BASELINES = {p.name: p for p in (StateOraclePolicy, Mem0LikePolicy, StoreAllPolicy, NoopPolicy)}
