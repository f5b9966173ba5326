"""``memgym/MemAgent-v0``: MemAgent's overwrite reader over any chunked task source."""

from __future__ import annotations

import re
from typing import Any

from memgym.codecs.memagent import MEMORY_MARKER, BoxedAnswerCodec, MemoryRewriteCodec
from memgym.envs.base import MemgymEnv, clean, step_info, text_space
from memgym.envs.sources import TaskSource, make_source, pick_instance
from memgym.errors import ConfigError
from memgym.ops import Answer, OpResult, Overwrite
from memgym.scoring import exact_match, token_f1

NO_MEMORY = "No previous memory"
CHARS_PER_TOKEN = 8  # the memory's character cap is this times max_memory_tokens
MAX_QUESTION_CHARS = 2000  # questions are cut to this in observations
_METRICS = {"em": exact_match, "f1": token_f1}
_TOKEN = re.compile(r"\S+")

MEMORY_PROMPT = (
    "You are given a problem, a section of an article that may help to answer it, and your "
    "previous memory. Read the section and rewrite the memory: keep every relevant detail of "
    "the previous memory and add the new information that helps to answer the problem. The "
    "memory may hold at most {max_tokens} words.\n\n"
    "<problem>\n{question}\n</problem>\n\n<memory>\n{memory}\n</memory>\n\n"
    "<section>\n{chunk}\n</section>\n\n" + MEMORY_MARKER + "\n"
)
ANSWER_PROMPT = (
    "You are given a problem and your memory of an article. Answer the problem from the memory "
    "and put the final answer in \\boxed{{}}.\n\n"
    "<problem>\n{question}\n</problem>\n\n<memory>\n{memory}\n</memory>\n\nYour answer:\n"
)
# strict (-v1): the answer must end the reply (text after it is a format error); the memory
# prompt is kept (it shows no placeholder: the memory is the whole completion)
ANSWER_PROMPT_V1 = (
    "You are given a problem and your memory of an article. Answer the problem from the memory "
    "and end your reply with the final answer in \\boxed{{}}: write nothing after it.\n\n"
    "<problem>\n{question}\n</problem>\n\n<memory>\n{memory}\n</memory>\n\nYour answer:\n"
)


def cut_memory(text: str, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` whitespace tokens and then to
    ``CHARS_PER_TOKEN * max_tokens`` characters (unchanged when it fits both)."""
    tokens = list(_TOKEN.finditer(text))
    if len(tokens) > max_tokens:
        text = text[:tokens[max_tokens - 1].end()]
    return text[:CHARS_PER_TOKEN * max_tokens]



def chunked_source(source: str | TaskSource, split: str, max_chunks: int,
                   **source_kwargs: Any) -> TaskSource:
    """:func:`~memgym.envs.sources.make_source`, checked against ``max_chunks``.

    Raises:
        ConfigError: The source's instances may have more chunks (its ``max_items``) than
            ``max_chunks``; or see ``make_source``.
    """
    made = make_source(source, split, **source_kwargs)
    bound = getattr(made, "max_items", None)
    if bound is not None and bound > max_chunks:
        raise ConfigError(f"source instances may have up to {bound} chunks; expected "
                          f"max_chunks >= {bound}, got {max_chunks}")
    return made


def overwrite(op: Overwrite, max_memory_tokens: int) -> tuple[str, OpResult]:
    """The memory ``op`` writes, cut by :func:`cut_memory` to ``max_memory_tokens``, and its
    result (``reason`` says when it was cut)."""
    memory = cut_memory(op.text, max_memory_tokens)
    return memory, OpResult(op, True, reason=f"cut to {max_memory_tokens} tokens / "
                            f"{CHARS_PER_TOKEN * max_memory_tokens} chars"
                            if memory != op.text else "")

class MemAgentEnv(MemgymEnv):
    """MemAgent's overwrite reader: read a long document chunk by chunk, rewriting a bounded
    memory after each chunk, then answer the question from the memory alone.

    An episode is one instance of the task source (default ``hotpotqa-haystack``: a HotpotQA
    question's paragraphs padded with other questions' paragraphs, shuffled and chunked, as in
    RULER-HotpotQA). The first question of the instance is asked. Steps ``0 .. T-1`` show chunk
    ``t`` and expect the new memory; step ``T`` expects the answer.

    ## Action Space
    ``Text(max_length=max_action_chars)``. Chunk steps: the new memory, parsed by
    :class:`memgym.codecs.memagent.MemoryRewriteCodec` (the text after the last
    ``Updated memory:``, else the whole text). Answer step: ``\\boxed{answer}``, parsed by
    :class:`memgym.codecs.memagent.BoxedAnswerCodec`. Text that does not parse is a valid
    action: it applies no op (the memory is kept) and is penalized.

    ## Observation Space
    ``Text(max_length=len(MEMORY_PROMPT) + 2000 + max(chunk_chars, 8192) +
    8 * max_memory_tokens)`` over :data:`memgym.envs.base.CHARSET` (questions are cut to 2000
    chars). Chunk steps: MemAgent's prompt with the question, the current memory (``No
    previous memory`` at first) and the chunk, ending in ``Updated memory:``. Answer step:
    the question and the memory, asking for ``\\boxed{}``. The observation after the last
    step is empty.

    ## Rewards
    ``format``: ``-format_penalty`` on a chunk step whose memory is empty (parse error; the
    memory is kept) or over-long (more than ``max_memory_tokens`` whitespace tokens or
    ``8 * max_memory_tokens`` characters: it is cut to fit, applied, and penalized, as a
    generation cap cuts MemAgent's memory), and on an answer step without a parsable
    ``\\boxed{}``; in strict mode also on a completion cut at ``max_new_tokens``, text after
    the ``\\boxed{}`` answer and a memory or answer copied from the prompt's instructions (its
    text without the problem, memory and section; see
    :meth:`~memgym.envs.base.MemgymEnv.parse`); else 0.
    ``em`` (or ``f1`` when ``metric="f1"``): on the answer step only, the SQuAD-normalized
    exact match (token F1) in [0, 1] of the boxed answer against the best gold answer; 0 on
    chunk steps. MemAgent's outcome reward is this final EM, which its trainer broadcasts to
    every turn (mean-centred GRPO, no std, n = 16); the env gives it once, on the final step.
    The step reward is the sum of the terms.

    ## Starting State
    Memory ``No previous memory``; chunk 0 of a freshly drawn instance.

    ## Episode End
    Terminates after the answer step, i.e. after ``num_chunks + 1`` steps
    (``max_steps = max_chunks + 1``). Never truncates.

    ## Info
    ``ops``, ``op_results``, ``parse_error``, ``reward_terms``, ``segment_end``
    (``"overwrite"`` after every chunk step: the memory is rewritten and the next prompt
    rebuilt; ``"end"`` after the answer), ``phase`` (``"memory"`` or ``"answer"``: what the
    next action must be), ``memory`` (the current memory), ``chunk`` (index of the next chunk;
    ``num_chunks`` on the answer step), ``num_chunks``, ``question``, ``max_memory_tokens``;
    ``instance`` on reset; on the answer step ``prediction`` and ``gold``; and
    ``privileged``: ``{"answer": first gold answer, "evidence_read": whether every evidence
    chunk has been shown, the next one included}`` (for the oracle).

    ## Arguments
    ``source`` (a registered source name or a :class:`TaskSource`; ``hotpotqa-haystack`` takes
    ``context_chars`` and ``chunk_chars``), ``split`` (``train`` / ``val`` / ``test``),
    ``max_memory_tokens`` (whitespace tokens; MemAgent caps the memory at 1024 LLM tokens),
    ``metric`` (``"em"`` as in MemAgent, or ``"f1"``), ``format_penalty``,
    ``max_chunks`` (longest instance accepted; ``max_steps = max_chunks + 1``),
    ``max_action_chars``, ``strict`` (strict format rules; the answer prompt asks for nothing
    after the answer), ``**source_kwargs`` (forwarded to the source).

    ## Version History
    * v1: ``strict=True``: a cut completion, text after the ``\\boxed{}`` answer and a memory
      or answer copied from the instructions are format errors; the answer prompt says that
      nothing may follow the answer (neither prompt shows a placeholder to copy).
    * v0: initial version (lenient codecs).
    """

    state_attrs = ("instance", "memory", "t")

    def __init__(self, source: str | TaskSource = "hotpotqa-haystack", split: str = "train",
                 max_memory_tokens: int = 256, metric: str = "em", format_penalty: float = 0.1,
                 max_chunks: int = 32, max_action_chars: int = 16384, strict: bool = False,
                 **source_kwargs: Any) -> None:
        if metric not in _METRICS:
            raise ConfigError(f"metric must be one of {sorted(_METRICS)}, got {metric!r}")
        if max_memory_tokens < 1:
            raise ConfigError(f"max_memory_tokens must be >= 1, got {max_memory_tokens}")
        self.source = chunked_source(source, split, max_chunks, **source_kwargs)
        self.metric, self.format_penalty = metric, format_penalty
        self.max_memory_tokens, self.max_chunks = max_memory_tokens, max_chunks
        self.max_steps, self.strict = max_chunks + 1, strict
        self.answer_prompt = ANSWER_PROMPT_V1 if strict else ANSWER_PROMPT
        self.memory_codec, self.answer_codec = MemoryRewriteCodec(), BoxedAnswerCodec()
        self.max_item_chars = max(getattr(self.source, "chunk_chars", 0), 8192)
        self.observation_space = text_space(len(MEMORY_PROMPT) + MAX_QUESTION_CHARS
                                            + self.max_item_chars
                                            + CHARS_PER_TOKEN * max_memory_tokens)
        self.action_space = text_space(max_action_chars)
        self.memory = NO_MEMORY

    @property
    def _question(self) -> str:
        return self.instance.questions[0].question[:MAX_QUESTION_CHARS]

    def _observation(self) -> str:
        items = self.instance.items
        if self.t < len(items):
            return clean(MEMORY_PROMPT.format(max_tokens=self.max_memory_tokens,
                                              question=self._question, memory=self.memory,
                                              chunk=items[self.t].text))
        return clean(self.answer_prompt.format(question=self._question, memory=self.memory))

    def _instructions(self, answer: bool) -> str:
        """The fixed text of the step's prompt (without problem, memory and section), which a
        strict parse refuses to see copied."""
        if answer:
            return self.answer_prompt.format(question="", memory="")
        return MEMORY_PROMPT.format(max_tokens=self.max_memory_tokens, question="", memory="",
                                    chunk="")

    def _info(self) -> dict[str, Any]:
        items, qa = self.instance.items, self.instance.questions[0]
        read = {item.id for item in items[:self.t + 1]}
        return {"phase": "memory" if self.t < len(items) else "answer", "memory": self.memory,
                "chunk": self.t, "num_chunks": len(items), "question": qa.question,
                "max_memory_tokens": self.max_memory_tokens,
                "privileged": {"answer": qa.answers[0] if qa.answers else "",
                               "evidence_read": set(qa.evidence) <= read}}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode. ``options={"episode": i}`` picks instance ``i`` of a finite source
        instead of a seeded draw.

        Raises:
            ConfigError: ``options["episode"]`` is out of range or the source is unbounded, or
                the instance has no question, more than ``max_chunks`` chunks or a chunk longer
                than ``max(chunk_chars, 8192)`` characters.
        """
        super().reset(seed=seed)
        self.instance = pick_instance(self.source, self.np_random, options)
        items, questions = self.instance.items, self.instance.questions
        longest = max((len(item.text) for item in items), default=0)
        if not 0 < len(items) <= self.max_chunks or not questions or (
                longest > self.max_item_chars):
            raise ConfigError(f"instance {self.instance.id} has {len(items)} chunks (longest "
                              f"{longest} chars) and {len(questions)} questions; expected "
                              f"1..max_chunks={self.max_chunks} chunks of at most "
                              f"{self.max_item_chars} chars and >= 1 question")
        self.memory, self.t = NO_MEMORY, 0
        return self._observation(), {"instance": self.instance.id, **self._info()}

    def _overwrite(self, op: Overwrite) -> OpResult:
        """Replace the memory with ``op.text``, cut to the bounds (then ``reason`` says so)."""
        self.memory, result = overwrite(op, self.max_memory_tokens)
        return result

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Rewrite the memory (chunk step) or score the boxed answer (answer step)."""
        terms = {self.metric: 0.0, "format": 0.0}
        extra: dict[str, Any] = {}
        terminated = self.t >= len(self.instance.items)
        if terminated:
            parsed = self.parse(self.answer_codec, action, self._instructions(answer=True))
            results = [OpResult(op, True) for op in parsed.ops]
            prediction = "".join(op.text for op in parsed.ops if isinstance(op, Answer))
            golds = self.instance.questions[0].answers if parsed.ok else ()
            score = _METRICS[self.metric]
            terms[self.metric] = max((score(prediction, g) for g in golds), default=0.0)
            extra = {"prediction": prediction, "gold": self._info()["privileged"]["answer"]}
        else:
            parsed = self.parse(self.memory_codec, action, self._instructions(answer=False))
            results = [self._overwrite(op) for op in parsed.ops if isinstance(op, Overwrite)]
            if any(r.reason for r in results):
                terms["format"] = -self.format_penalty
        if not parsed.ok:
            terms["format"] = -self.format_penalty
        self.t += 1
        if not terminated:
            extra.update(self._info())
        observation = "" if terminated else self._observation()
        info = step_info(parsed, results, terms, "end" if terminated else "overwrite", **extra)
        return observation, float(sum(terms.values())), terminated, False, info
