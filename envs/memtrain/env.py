"""``memgym/MemTrain-v0``: MemTrain's self-supervised memory training over unlabeled paragraphs."""

from __future__ import annotations

from typing import Any

import numpy as np

from memgym.codecs.memagent import MEMORY_MARKER, MemoryRewriteCodec
from memgym.envs.base import MemgymEnv, clean, step_info, text_space
from memgym.envs.memagent.env import CHARS_PER_TOKEN, NO_MEMORY, chunked_source, overwrite
from memgym.envs.memtrain.cloze import METRICS, Probe, probes, read, windows
from memgym.envs.sources import TaskSource, pick_instance
from memgym.errors import ConfigError
from memgym.ops import OpResult, Overwrite

MEMORY_PROMPT = (
    "You are reading an article section by section and keep a memory of at most {max_tokens} "
    "words. Later, names, numbers and dates of the article will be blanked out and must be "
    "filled in from your memory alone. Rewrite the memory: keep what you still need of it and "
    "add the facts of this section, each with the words it was said with.\n\n"
    "<memory>\n{memory}\n</memory>\n\n<section>\n{chunk}\n</section>\n\n" + MEMORY_MARKER + "\n"
)


def _draw(pool: list[Probe], n: int, rng: np.random.Generator) -> tuple[Probe, ...]:
    """Up to ``n`` probes of ``pool`` in distinct sentences (sentences drawn uniformly, then one
    of each sentence's entities), in reading order."""
    by_sentence: dict[tuple[int, str], list[Probe]] = {}
    for probe in pool:
        by_sentence.setdefault((probe.chunk, probe.sentence), []).append(probe)
    keys = list(by_sentence)
    chosen = sorted(rng.choice(len(keys), min(n, len(keys)), replace=False)) if keys else []
    return tuple(by_sentence[keys[i]][int(rng.integers(len(by_sentence[keys[i]])))]
                 for i in chosen)


def _longest_chunk(source: TaskSource) -> int:
    """The most characters a chunk of ``source`` may have: the longest item of a finite source,
    else ``max(chunk_chars, 8192)``."""
    if source.num_instances is None:
        return max(getattr(source, "chunk_chars", 0), 8192)
    return max(len(item.text) for i in range(source.num_instances)
               for item in source.instance(i).items)


class MemTrainEnv(MemgymEnv):
    """MemTrain's proxy tasks: read unlabeled paragraphs chunk by chunk, rewriting a bounded
    memory after each; masked entities of the text are then reconstructed from the memory.

    An episode is one instance of the task source (default ``squad``: 4 consecutive paragraphs
    of a SQuAD v2 Wikipedia article; ``hotpotqa``: a HotpotQA question's 10 paragraphs); its
    items are the chunks and its questions are ignored (the text is used unlabeled). At reset
    the cloze probes are drawn with the episode RNG from the probes of the text (entity rule and
    reader: :mod:`memgym.envs.memtrain.cloze`): ``probes`` *end-to-end* probes over the whole
    text, and ``recall_probes`` *recall* probes at every ``recall_every``-th chunk before the
    last, over the chunks read so far (each set in distinct sentences). The policy never sees
    them.

    ## Action Space
    ``Text(max_length=max_action_chars)``: the new memory, parsed by
    :class:`memgym.codecs.memagent.MemoryRewriteCodec` (the text after the last ``Updated
    memory:``, else the whole text). Text that does not parse (an empty memory) is a valid
    action: the memory is kept and the step penalized.

    ## Observation Space
    ``Text(max_length=len(MEMORY_PROMPT) + L + 8 * max_memory_tokens)`` where ``L`` is the
    longest chunk of a finite source, else ``max(chunk_chars, 8192)``,
    over :data:`memgym.envs.base.CHARSET`: the prompt with the current memory (``No previous
    memory`` at first) and the chunk, ending in ``Updated memory:``. The observation after the
    last step is empty.

    ## Rewards
    After the memory of step ``t`` is written, the probes due at ``t`` are read from it:
    ``recall``: at a recall step, ``recall_weight`` × the mean score of its probes / the number
    of recall steps (so the return holds ``recall_weight`` × the mean over recall steps); 0 on
    other steps. ``e2e``: on the last step, ``e2e_weight`` × the mean score of the end-to-end
    probes; 0 before. A probe's score is the reader's exact match (``metric="em"``) or token F1
    (``"f1"``) of the masked entity, in [0, 1]. ``format``: ``-format_penalty`` on an empty
    memory (parse error; the memory is kept) or an over-long one (more than
    ``max_memory_tokens`` whitespace tokens or ``8 * max_memory_tokens`` characters: it is cut
    to fit, applied, then read, and penalized, as MemAgent's generation cap cuts its memory); in
    strict mode also on a completion cut at ``max_new_tokens`` and on a memory copied from the
    instructions; else 0. The step reward is the sum of the terms. The weights, counts and
    reader are memgym's choices: MemTrain trains on both objectives; see the module
    :mod:`memgym.envs.memtrain.cloze` for what the reader credits.

    ## Starting State
    Memory ``No previous memory``; chunk 0 of a freshly drawn instance.

    ## Episode End
    Terminates after the last chunk's step (``num_chunks`` steps; ``max_steps = max_chunks``).
    Never truncates.

    ## Info
    ``ops``, ``op_results``, ``parse_error``, ``reward_terms``, ``segment_end``
    (``"overwrite"``; ``"end"`` after the last step), ``phase`` (always ``"memory"``),
    ``memory``, ``chunk`` (index of the next chunk), ``num_chunks``, ``max_memory_tokens``,
    ``recall_steps`` (the steps that score recall probes); ``instance`` on reset; ``probes`` on
    a step that scored some (``objective``, ``probe``, ``answer``, ``prediction``, ``score``,
    ``chunk``); and ``privileged``: ``{"needed": [...]}``, the probes still to be scored whose
    chunk has been shown (the next one included), as ``chunk``, ``sentence``, ``start``,
    ``answer`` (for the oracle).

    ## Arguments
    ``source`` (a registered source name or a :class:`TaskSource`), ``split``,
    ``max_memory_tokens`` (whitespace tokens), ``probes``, ``recall_probes``, ``recall_every``
    (0: no recall objective), ``e2e_weight``, ``recall_weight``, ``metric`` (``"em"`` or
    ``"f1"``), ``format_penalty``, ``max_chunks`` (longest instance accepted),
    ``max_action_chars``, ``strict``, ``**source_kwargs`` (forwarded to the source).

    ## Version History
    * v1: ``strict=True``: a cut completion, text after the memory and a memory copied from
      the instructions are format errors.
    * v0: initial version.
    """

    state_attrs = ("instance", "memory", "t", "e2e", "recall")

    def __init__(self, source: str | TaskSource = "squad", split: str = "train",
                 max_memory_tokens: int = 128, probes: int = 6, recall_probes: int = 2,
                 recall_every: int = 1, e2e_weight: float = 1.0, recall_weight: float = 0.5,
                 metric: str = "em", format_penalty: float = 0.1, max_chunks: int = 32,
                 max_action_chars: int = 16384, strict: bool = False,
                 **source_kwargs: Any) -> None:
        if metric not in METRICS:
            raise ConfigError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        if max_memory_tokens < 1 or probes < 1 or recall_probes < 0 or recall_every < 0:
            raise ConfigError(f"expected max_memory_tokens >= 1, probes >= 1, recall_probes >= 0 "
                              f"and recall_every >= 0, got {max_memory_tokens}, {probes}, "
                              f"{recall_probes} and {recall_every}")
        self.source = chunked_source(source, split, max_chunks, **source_kwargs)
        self.max_memory_tokens, self.max_chunks = max_memory_tokens, max_chunks
        self.num_probes, self.recall_probes, self.recall_every = probes, recall_probes, recall_every
        self.e2e_weight, self.recall_weight = e2e_weight, recall_weight
        self.metric, self.format_penalty = metric, format_penalty
        self.max_steps, self.strict = max_chunks, strict
        self.codec = MemoryRewriteCodec()
        self.max_item_chars = _longest_chunk(self.source)
        self.observation_space = text_space(len(MEMORY_PROMPT) + self.max_item_chars
                                            + CHARS_PER_TOKEN * max_memory_tokens)
        self.action_space = text_space(max_action_chars)
        self.memory = NO_MEMORY

    def _observation(self) -> str:
        return clean(MEMORY_PROMPT.format(max_tokens=self.max_memory_tokens, memory=self.memory,
                                          chunk=self.instance.items[self.t].text))

    def _instructions(self) -> str:
        """The prompt without memory and chunk, which a strict parse refuses to see copied."""
        return MEMORY_PROMPT.format(max_tokens=self.max_memory_tokens, memory="", chunk="")

    def _info(self) -> dict[str, Any]:
        due = [*((p, step) for step, ps in self.recall.items() for p in ps),
               *((p, len(self.instance.items) - 1) for p in self.e2e)]
        needed = sorted({p for p, step in due if p.chunk <= self.t <= step},
                        key=lambda p: (p.chunk, p.sentence, p.start))
        return {"phase": "memory", "memory": self.memory, "chunk": self.t,
                "num_chunks": len(self.instance.items), "max_memory_tokens": self.max_memory_tokens,
                "recall_steps": sorted(self.recall),
                "privileged": {"needed": [{"chunk": p.chunk, "sentence": p.sentence,
                                           "start": p.start, "answer": p.answer}
                                          for p in needed]}}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode and draw its probes. ``options={"episode": i}`` picks instance
        ``i`` of a finite source instead of a seeded draw.

        Raises:
            ConfigError: ``options["episode"]`` is out of range or the source is unbounded, or
                the instance has no chunk, more than ``max_chunks`` or (unbounded source) one
                longer than ``max(chunk_chars, 8192)`` characters.
        """
        super().reset(seed=seed)
        self.instance = pick_instance(self.source, self.np_random, options)
        items = self.instance.items
        longest = max((len(item.text) for item in items), default=0)
        if not 0 < len(items) <= self.max_chunks or longest > self.max_item_chars:
            raise ConfigError(f"instance {self.instance.id} has {len(items)} chunks (longest "
                              f"{longest} chars); expected 1..max_chunks={self.max_chunks} "
                              f"chunks of at most {self.max_item_chars} chars")
        pool = [p for k, item in enumerate(items) for p in probes(k, item.text)]
        self.e2e = _draw(pool, self.num_probes, self.np_random)
        steps = range(self.recall_every - 1, len(items) - 1,
                      self.recall_every) if self.recall_every else ()
        self.recall = {t: drawn for t in steps if (drawn := _draw(
            [p for p in pool if p.chunk <= t], self.recall_probes, self.np_random))}
        self.memory, self.t = NO_MEMORY, 0
        return self._observation(), {"instance": self.instance.id, **self._info()}

    def _overwrite(self, op: Overwrite) -> OpResult:
        """Replace the memory with ``op.text``, cut to the bounds (then ``reason`` says so)."""
        self.memory, result = overwrite(op, self.max_memory_tokens)
        return result

    def _score(self, objective: str, due: tuple[Probe, ...]) -> tuple[float, list[dict]]:
        """Mean score of ``due`` read from the current memory, and one record per probe."""
        memory_windows = windows(self.memory)
        records = []
        for probe in due:
            prediction, score = read(probe, memory_windows, self.metric)
            records.append({"objective": objective, "probe": probe.text, "answer": probe.answer,
                            "prediction": prediction, "score": score, "chunk": probe.chunk})
        return sum(r["score"] for r in records) / len(records), records

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Rewrite the memory, then score the probes due at this step."""
        terms = {"e2e": 0.0, "recall": 0.0, "format": 0.0}
        parsed = self.parse(self.codec, action, self._instructions())
        results = [self._overwrite(op) for op in parsed.ops if isinstance(op, Overwrite)]
        if not parsed.ok or any(r.reason for r in results):
            terms["format"] = -self.format_penalty
        scored: list[dict] = []
        if self.t in self.recall:
            mean, scored = self._score("recall", self.recall[self.t])
            terms["recall"] = self.recall_weight * mean / len(self.recall)
        terminated = self.t == len(self.instance.items) - 1
        if terminated and self.e2e:
            mean, records = self._score("e2e", self.e2e)
            terms["e2e"], scored = self.e2e_weight * mean, scored + records
        self.t += 1
        extra: dict[str, Any] = {"probes": scored} if scored else {}
        if not terminated:
            extra.update(self._info())
        observation = "" if terminated else self._observation()
        info = step_info(parsed, results, terms, "end" if terminated else "overwrite", **extra)
        return observation, float(sum(terms.values())), terminated, False, info
