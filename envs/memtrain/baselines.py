"""Scripted baselines for MemTrain: memory rewrites in MemAgent's ``Updated memory:`` format.

They read the structured ``info`` (``memory``, ``max_memory_tokens``; the oracle also
``info["privileged"]``) and the chunk from the observation. Baselines to compare learned
policies against, not stand-ins for the LLM path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memgym.codecs.memagent import MemoryRewriteCodec
from memgym.engine import Completion
from memgym.envs.memagent.env import NO_MEMORY, cut_memory
from memgym.envs.memtrain.cloze import READ_WINDOW, entities, sentences
from memgym.ops import Overwrite

_CODEC = MemoryRewriteCodec()
_TOKEN = re.compile(r"\S+")


def _memory(text: str) -> Completion:
    return Completion(_CODEC.encode([Overwrite(text or NO_MEMORY)]))


def _lines(observation: str, info: dict) -> list[str]:
    """The sentences of the current memory, then those of the chunk shown in ``observation``."""
    chunk = observation.split("<section>\n", 1)[-1].rsplit("\n</section>", 1)[0]
    old = [] if info["memory"] == NO_MEMORY else sentences(info["memory"])
    return list(dict.fromkeys(old + sentences(chunk)))


class NoopPolicy:
    """Keeps nothing: rewrites the memory to ``No previous memory`` at every chunk (well-formed;
    no probe can be read from it, so it scores exactly 0: the lower bound)."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_memory(NO_MEMORY) for _ in infos]


class KeepLatestPolicy:
    """Sliding window: the last ``max_memory_tokens`` words of the memory followed by the
    chunk (one sentence a line)."""

    name = "keep-latest"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        out = []
        for obs, info in zip(observations, infos, strict=True):
            text = "\n".join(_lines(obs, info))
            tokens = list(_TOKEN.finditer(text))[-info["max_memory_tokens"]:]
            out.append(_memory(text[tokens[0].start():] if tokens else ""))
        return out


class EntityDensePolicy:
    """Keeps the sentences of the memory and the chunk with the most entities per word
    (:func:`memgym.envs.memtrain.cloze.entities`), densest first while they fit
    ``max_memory_tokens``, in reading order."""

    name = "entity-dense"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        out = []
        for obs, info in zip(observations, infos, strict=True):
            lines = _lines(obs, info)
            sizes = [len(line.split()) for line in lines]
            ranked = sorted(range(len(lines)), key=lambda k: -len(entities(lines[k])) / sizes[k])
            kept, budget = [], info["max_memory_tokens"]
            for k in ranked:
                if sizes[k] <= budget:
                    kept.append(k)
                    budget -= sizes[k]
            out.append(_memory("\n".join(lines[k] for k in sorted(kept))))
        return out


def _window(sentence: str, start: int, answer: str, size: int) -> str:
    """The ``size`` whitespace words of ``sentence`` centred on the entity at ``start``."""
    words = sentence.split()
    first, length = len(sentence[:start].split()), len(answer.split())
    lo = max(0, min(first - (size - length) // 2, len(words) - size))
    return " ".join(words[lo:lo + size])


class OraclePolicy:
    """Upper bound from gold data: keeps, one a line, the sentences holding the probed entities
    still to be scored (``info["privileged"]["needed"]``), each cut to an equal share of
    ``max_memory_tokens`` words centred on its entity."""

    name = "oracle"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        out = []
        for info in infos:
            needed = info["privileged"]["needed"]
            size = min(READ_WINDOW, info["max_memory_tokens"] // max(len(needed), 1))
            lines = dict.fromkeys(_window(p["sentence"], p["start"], p["answer"], max(size, 1))
                                  for p in needed)
            out.append(_memory(cut_memory("\n".join(lines), info["max_memory_tokens"])))
        return out


BASELINES = {p.name: p for p in (OraclePolicy, EntityDensePolicy, KeepLatestPolicy, NoopPolicy)}
