"""``memgym/Mem1-v0``: MEM1's constant-memory multi-objective QA with a local BM25 retriever."""

from __future__ import annotations

from typing import Any

import numpy as np

from memgym.codecs import XmlTagsCodec
from memgym.envs.base import MemgymEnv, clean, step_info, text_space
from memgym.envs.mem1.compose import (
    MAX_SUBQUESTION_CHARS,
    ComposedTask,
    compose,
    question_bank,
)
from memgym.envs.sources import QAItem
from memgym.errors import ConfigError
from memgym.ops import Answer, OpResult, Retrieve, SetState
from memgym.scoring import exact_match

MAX_OBJECTIVES = 16

INSTRUCTIONS = (
    "Answer the question using a search engine over Wikipedia passages. Each turn, first write "
    "your internal state in <think>...</think>: everything worth remembering, because only the "
    "question, your last <think> and the last <information> are kept. Then either search with "
    "<search>query</search> (the top passages come back in <information>...</information>) or "
    "give the final answers, in order and separated by ';', as "
    "<answer>answer 1; answer 2</answer>."
)
# strict (-v1): no placeholder to copy; the state, query and answers must be the policy's own
INSTRUCTIONS_V1 = (
    "Answer the question using a search engine over Wikipedia passages. Each turn, first write "
    "your internal state between <think> and </think>: everything worth remembering, because "
    "only the question, your last internal state and the last <information> block are kept. "
    "Then either search, with a query of your own between <search> and </search> (the top "
    "passages come back in an <information> block), or give the final answers between <answer> "
    "and </answer>: one answer per sub-question, in order, separated by semicolons. Write "
    "nothing after the closing tag."
)
INVALID_HINT = "Write <think>...</think> then <search>...</search> or <answer>...</answer>."
INVALID_HINT_V1 = "Write a <think> block, then one <search> block or one <answer> block."


def score_answers(prediction: str, parts: tuple[QAItem, ...]) -> list[float]:
    """EM per sub-question: ``prediction`` split on ``;`` in order, each part's EM is its max
    over the gold aliases (SQuAD normalization); a missing sub-answer scores 0.

    Returns:
        One float in {0.0, 1.0} per part of ``parts``.
    """
    predicted = [p.strip() for p in prediction.split(";")]
    return [max(exact_match(predicted[i], gold) for gold in part.answers)
            if i < len(predicted) else 0.0 for i, part in enumerate(parts)]


def count_tokens(text: str) -> int:
    """Whitespace tokens of ``text`` (``str.split``); a subword tokenizer gives ~1.3-1.5x."""
    return len(text.split())


class Mem1Env(MemgymEnv):
    """MEM1: answer a k-objective question by searching, keeping only a rewritten internal state.

    An episode is one task of :func:`memgym.envs.mem1.compose.compose`: ``k`` NQ-Open /
    HotpotQA questions joined into one. Each turn the policy writes its internal state in
    ``<think>`` and then either ``<search>``es a BM25 index over the split's passage pool (the
    top ``top_k`` passages come back as ``<information>``) or ``<answer>``s all sub-questions,
    separated by ``;``. The context is rebuilt every turn from the question, the *last*
    internal state and the *last* information block only, so it stays constant in size however
    many turns the episode takes.

    ## Action Space
    ``Text(max_length=max_action_chars)``: the policy's raw text, parsed by
    :class:`memgym.codecs.XmlTagsCodec` (``<think>`` optional unless ``require_think``; exactly
    one ``<search>`` or ``<answer>``). Text that does not parse is a valid action: it applies no
    op, keeps the previous internal state and is penalized.

    ## Observation Space
    ``Text`` over :data:`memgym.envs.base.CHARSET`, its bound computed from the arguments: the
    instructions, ``Question: <composed question>``, ``Turn t of T.``, the last internal state as
    ``<think>…</think>`` (at most ``max_state_chars``) and the last ``<information>`` block (``Doc
    i (Title: …)`` then the passage on the next line, each at most ``max_passage_chars``; or why
    the last action was invalid).

    ## Rewards
    ``em``: on the answer step, the sum over sub-questions of exact match (in [0, k]; MEM1's
    reward). ``format``: ``-format_penalty`` on a step whose action does not parse (in strict
    mode also: a completion cut at ``max_new_tokens``, text after the last closing tag, a
    state, query or answer copied from the instructions; see
    :meth:`~memgym.envs.base.MemgymEnv.parse`), else 0. The step reward is their sum.

    ## Starting State
    The question, no internal state, no information; turn 1.

    ## Episode End
    Terminates on ``<answer>``. Truncates after ``max_turns`` turns without an answer (the ``em``
    term is then 0). ``max_steps == max_turns``.

    ## Info
    ``ops``, ``op_results``, ``parse_error``, ``reward_terms``, ``segment_end`` (``"overwrite"``:
    the context is rebuilt every turn, so each step is its own segment; ``"end"`` on the last
    step), ``turn`` (turns taken), ``max_turns``, ``context_tokens`` (whitespace tokens of the
    context the turn was generated in: prompt + action; the prompt alone at reset) and
    ``peak_context_tokens`` (max of ``context_tokens`` so far: MEM1's peak memory),
    ``privileged`` (``questions`` and gold ``answers`` aliases per sub-question, for the oracle);
    at reset ``instance`` and ``num_objectives``; on the answer step ``predictions`` and ``em``
    (per sub-question).

    ## Arguments
    ``split`` (``train`` / ``val`` / ``test``), ``k`` (objectives, 1-16; MEM1 trains on 2),
    ``hotpot_fraction`` (chance a sub-question is HotpotQA rather than NQ), ``max_turns`` (default
    ``2k + 2``: 6 for k=2, MEM1's QA limit), ``top_k`` (passages per search), ``format_penalty``,
    ``require_think``, ``max_action_chars``, ``max_state_chars``, ``max_passage_chars``,
    ``strict`` (strict format rules and instructions without a placeholder to copy).

    ## Version History
    * v1: ``strict=True``: text after the last closing tag, a cut completion and a state,
      query or answer copied from the instructions are format errors; the instructions (and
      the hint after an invalid action) show the tags without placeholder content.
    * v0: initial version (lenient codec).
    """

    state_attrs = ("task", "state", "information", "turn", "prompt_tokens", "peak_tokens",
                   "done")

    def __init__(self, split: str = "train", k: int = 2, hotpot_fraction: float = 0.5,
                 max_turns: int | None = None, top_k: int = 3, format_penalty: float = 0.1,
                 require_think: bool = False, max_action_chars: int = 4096,
                 max_state_chars: int = 2000, max_passage_chars: int = 2000,
                 strict: bool = False) -> None:
        for name, value, lo in (("k", k, 1), ("top_k", top_k, 1), ("max_turns", max_turns, 1),
                                ("max_action_chars", max_action_chars, 1),
                                ("max_state_chars", max_state_chars, 0),
                                ("max_passage_chars", max_passage_chars, 1)):
            if value is not None and (not isinstance(value, int) or value < lo):
                raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
        if k > MAX_OBJECTIVES:
            raise ConfigError(f"k must be in [1, {MAX_OBJECTIVES}], got {k}")
        if not isinstance(hotpot_fraction, int | float) or not 0.0 <= hotpot_fraction <= 1.0:
            raise ConfigError(f"hotpot_fraction must be in [0, 1], got {hotpot_fraction!r}")
        self.bank = question_bank(split)
        self.k, self.hotpot_fraction, self.top_k = k, hotpot_fraction, top_k
        self.max_turns = max_turns if max_turns is not None else 2 * k + 2
        self.max_steps = self.max_turns
        self.format_penalty, self.strict = format_penalty, strict
        self.instructions = INSTRUCTIONS_V1 if strict else INSTRUCTIONS
        self.max_state_chars, self.max_passage_chars = max_state_chars, max_passage_chars
        self.codec = XmlTagsCodec(top_k=top_k, require_think=require_think)
        bound = (len(self.instructions) + k * (MAX_SUBQUESTION_CHARS + 8) + max_state_chars
                 + top_k * (max_passage_chars + 32) + 256)
        self.observation_space = text_space(bound)
        self.action_space = text_space(max_action_chars)

    def _observation(self) -> str:
        think = f"<think>{self.state}</think>\n" if self.state else ""
        info = f"<information>\n{self.information}\n</information>" if self.information else ""
        return clean(f"{self.instructions}\nQuestion: {self.task.question}\n"
                     f"Turn {self.turn + 1} of {self.max_turns}.\n{think}{info}")

    def _search(self, op: Retrieve) -> str:
        hits = self.bank.index.search(op.query, op.k)
        docs = [self.bank.passages[i] for i, _ in hits]
        return "\n".join(f"Doc {n} (Title: {d.speaker})\n{d.text[:self.max_passage_chars]}"
                         for n, d in enumerate(docs, 1)) or "No results."

    def _info(self, context_tokens: int) -> dict[str, Any]:
        return {"turn": self.turn, "max_turns": self.max_turns,
                "context_tokens": context_tokens, "peak_context_tokens": self.peak_tokens,
                "privileged": {"questions": [p.question for p in self.task.parts],
                               "answers": [list(p.answers) for p in self.task.parts]}}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode on a freshly composed task. ``options={"episode": i}`` composes the
        task from ``numpy.random.default_rng(i)`` instead of the env's RNG, so ``i`` names a
        fixed task (e.g. a fixed test set) whatever the seed.
        """
        super().reset(seed=seed)
        index = (options or {}).get("episode")
        rng = self.np_random if index is None else np.random.default_rng(index)
        self.task: ComposedTask = compose(self.bank, rng, self.k, self.hotpot_fraction)
        self.state, self.information, self.turn, self.done = "", "", 0, False
        observation = self._observation()
        self.prompt_tokens = self.peak_tokens = count_tokens(observation)
        info = {"instance": self.task.id, "num_objectives": self.k,
                **self._info(self.prompt_tokens)}
        return observation, info

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Apply one turn: rewrite the state, then search or answer (see the class docs)."""
        parsed = self.parse(self.codec, action, self.instructions)
        terms = {"format": 0.0 if parsed.ok else -self.format_penalty, "em": 0.0}
        context_tokens = self.prompt_tokens + count_tokens(action)
        self.peak_tokens = max(self.peak_tokens, context_tokens)
        self.turn += 1
        results, extra, answered = [], {}, False
        if parsed.error is not None:
            hint = INVALID_HINT_V1 if self.strict else INVALID_HINT
            self.information = f"Invalid action: {parsed.error.reason}. {hint}"
        else:
            self.state = ""
            for op in parsed.ops:
                if isinstance(op, SetState):
                    self.state = op.text[:self.max_state_chars]
                elif isinstance(op, Retrieve):
                    self.information = self._search(op)
                elif isinstance(op, Answer):
                    em = score_answers(op.text, self.task.parts)
                    terms["em"], answered = float(sum(em)), True
                    extra = {"predictions": [p.strip() for p in op.text.split(";")], "em": em}
                results.append(OpResult(op, True))
        truncated = not answered and self.turn >= self.max_turns
        self.done = answered or truncated
        observation = "" if self.done else self._observation()
        self.prompt_tokens = count_tokens(observation)
        info = step_info(parsed, results, terms, "end" if self.done else "overwrite",
                         **self._info(context_tokens), **extra)
        return observation, float(sum(terms.values())), answered, truncated, info
