"""``memgym/MemSifter-v0``: MemSifter's retrieval as ranking, on LoCoMo.

MemSifter (Tan et al., 2026, "MemSifter: Offloading LLM Memory Retrieval via Outcome-Driven Proxy
Reasoning", arXiv:2603.03379) trains a small proxy model to rank a user's past sessions for a
task; the reward is the *net* contribution of the ranked sessions to a working model's answer
score, measured at Fibonacci cut-offs and weighted like DCG so that useful sessions pay more when
ranked higher.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import bm25s
import numpy as np

from memgym.codecs import RankingCodec
from memgym.envs.answerers import Answerer, Question, make_answerer
from memgym.envs.base import MemgymEnv, clean, step_info, text_space
from memgym.envs.locomo.data import ADVERSARIAL, QA, SPLITS, load_locomo
from memgym.errors import ConfigError
from memgym.memory import MemoryBank
from memgym.ops import Add, OpResult

INSTRUCTIONS = (
    "You help an assistant remember a long conversation. Rank the candidate sessions below by "
    "how useful they are to answer the question, most useful first. Reply with the candidate "
    "indices only: <ranking>i,j,k</ranking>. The assistant then answers with the top 1, 2, 3, "
    "5, 8, ... sessions you ranked; sessions you leave out are not shown to it."
)
# strict (-v1): no placeholder to copy (the ranking must be the policy's own)
INSTRUCTIONS_V1 = (
    "You help an assistant remember a long conversation. Rank the candidate sessions below by "
    "how useful they are to answer the question, most useful first. Reply with one <ranking> "
    "tag pair around the candidate indices (the numbers in square brackets), separated by "
    "commas, and nothing else. The assistant then answers with the top 1, 2, 3, 5, 8 and so on "
    "(the Fibonacci numbers) sessions you ranked; sessions you leave out are not shown to it."
)
_MAX_KEYWORD_CHARS = 20


@dataclass(frozen=True)
class Session:
    """One LoCoMo session as the env shows and uses it.

    Attributes:
        number: LoCoMo session number (``session_<number>``).
        date: The session's date string.
        turns: ``(dia_id, "speaker: text")`` per dialogue turn, in order.
        keywords: The session's most distinctive words within its conversation (TF-IDF).
    """

    number: int
    date: str
    turns: tuple[tuple[str, str], ...]
    keywords: tuple[str, ...]

    @property
    def text(self) -> str:
        """The session's turns joined by spaces."""
        return " ".join(text for _, text in self.turns)


def _keywords(texts: list[str], k: int) -> list[tuple[str, ...]]:
    """Top-``k`` TF-IDF words (tf · ln(n / df)) of each text among ``texts``; ties by word."""
    tokens = [[w for w in doc if w.isalpha() and 3 <= len(w) <= _MAX_KEYWORD_CHARS]
              for doc in bm25s.tokenize(texts, stopwords="en", return_ids=False,
                                        show_progress=False)]
    df = Counter(w for doc in tokens for w in set(doc))
    out = []
    for doc in tokens:
        scores = {w: tf * math.log(len(texts) / df[w]) for w, tf in Counter(doc).items()}
        ranked = sorted((w for w in scores if scores[w] > 0), key=lambda w: (-scores[w], w))
        out.append(tuple(ranked[:k]))
    return out


@lru_cache(maxsize=32)
def conversation_sessions(conversation: int, keywords: int = 8,
                          data_path: str | None = None) -> tuple[Session, ...]:
    """The sessions of LoCoMo conversation ``conversation`` (index in file order), cached.

    Args:
        conversation: 0..9.
        keywords: Distinctive words kept per session.
        data_path: ``locomo10.json``; default: the data dirs.
    """
    turns = load_locomo(data_path)[conversation].turns
    numbers = sorted({t.session for t in turns})
    grouped = [[t for t in turns if t.session == n] for n in numbers]
    texts = [" ".join(f"{t.speaker}: {t.text}" for t in g) for g in grouped]
    return tuple(Session(n, g[0].date, tuple((t.dia_id, f"{t.speaker}: {t.text}") for t in g), kw)
                 for n, g, kw in zip(numbers, grouped, _keywords(texts, keywords), strict=True))


def fibonacci_tiers(limit: int) -> tuple[int, ...]:
    """MemSifter's cut-offs: the Fibonacci numbers 1, 2, 3, 5, 8, ... that are ``<= limit``."""
    tiers = [1, 2]
    while tiers[-1] + tiers[-2] <= limit:
        tiers.append(tiers[-1] + tiers[-2])
    return tuple(t for t in tiers if t <= limit)


def tier_weights(tiers: tuple[int, ...]) -> tuple[float, ...]:
    """MemSifter's tier weights ``w_n = C(F_n) - C(F_{n+1})`` with the DCG discount
    ``C(k) = 1 / log2(k + 1)``; the last tier takes ``C(F_m)`` (as MemSifter's reference code
    ``genrank_reward_score_paper.py`` does), so the weights telescope to ``C(1) = 1``.

    A session first included at tier ``F_n`` thus earns its gain with total weight ``C(F_n)``:
    a stepped DCG discount of its rank.
    """
    c = [1.0 / math.log2(f + 1) for f in tiers]
    return tuple(c[n] - c[n + 1] for n in range(len(c) - 1)) + tuple(c[-1:])


class MemSifterEnv(MemgymEnv):
    """MemSifter's proxy: rank a conversation's candidate sessions for a question.

    An episode is one LoCoMo question of the split and ``num_candidates`` sessions of its
    conversation (all sessions holding the question's evidence, plus a seeded sample of the
    others, in chronological order). The policy answers once with a ranking; a frozen answerer
    then answers the question from the top-ranked sessions' turns.

    ## Action Space
    ``Text(max_length=max_action_chars)``: the policy's raw text, parsed by
    :class:`memgym.codecs.RankingCodec` (``<ranking>i,j,…</ranking>``) into one
    :class:`memgym.ops.Rank`. Text that does not parse is a valid action: it is penalized.

    ## Observation Space
    ``Text`` over :data:`memgym.envs.base.CHARSET` (its ``max_length`` is the longest observation
    the configuration can produce, ~5.5k chars by default): the instructions, the question and
    one line per candidate: ``[index] date | keywords: … | first preview_chars chars``.

    ## Rewards
    ``gain``: MemSifter's net, rank-discounted contribution of the ranked sessions. For the
    Fibonacci tiers ``F_1..F_m`` = 1, 2, 3, 5, 8, … up to ``min(max_rank, num_candidates)``,
    ``s_F`` is the answerer's score given the turns of the top-``F`` ranked sessions
    (``answerer="recall"``, the default: max token F1 of the retrieved turns taken whole;
    ``"span"``: of their best answer span) and ``s_0`` its score with no memory;
    ``gain = Σ_n w_n (s_{F_n} − s_0)`` with the weights of :func:`tier_weights` (they sum to
    1). With a :class:`RecallAnswerer` ``s_0 = 0``, so the gain is in [0, 1].
    ``format``: ``-format_penalty`` when the action does not parse (no ``<ranking>`` block,
    unclosed, or a non-integer item; in strict mode also a completion cut at
    ``max_new_tokens`` or text after ``</ranking>``, see
    :meth:`~memgym.envs.base.MemgymEnv.parse`; then ``gain`` = 0) or when it ranks an
    out-of-range or repeated index (those are dropped, the rest counts, as MemSifter
    deduplicates); else 0.
    Indices past ``max_rank`` are ignored; an empty ranking is valid and gains 0.

    ## Starting State
    A question drawn with the seed (or ``options={"episode": i}``) and its candidate sessions.

    ## Episode End
    Terminates after the one step (``max_steps`` = 1). Never truncates.

    ## Info
    Reset: ``question``, ``conversation`` (LoCoMo sample id), ``candidates`` (per candidate:
    ``index``, ``session`` number, ``date``, full ``text``; what MemSifter's proxy reads, for
    scripted baselines) and ``privileged`` (``evidence_sessions``: candidate indices holding
    the evidence; ``answer``). Step: ``ops``, ``op_results``, ``parse_error``,
    ``reward_terms``, ``segment_end`` (``"end"``), ``ranking`` (the indices used),
    ``dropped``, ``score_0``, ``tiers`` (``{F: s_F}``), ``weights`` (``{F: w}``).

    ## Arguments
    ``split`` (``train`` / ``val`` / ``test``: Memory-R1's split by conversation; ``train-wide``:
    every conversation but val's),
    ``num_candidates`` (None: every session of the conversation), ``preview_chars``,
    ``keywords`` (per candidate), ``max_rank`` (largest cut-off; MemSifter ranks 10),
    ``answerer`` (``"recall"``, ``"span"`` or an :class:`Answerer`), ``answer_top_k``,
    ``include_adversarial``, ``format_penalty``, ``max_action_chars``, ``data_path``,
    ``strict`` (strict format rules and instructions without a placeholder to copy).

    ## Version History
    * v1: ``strict=True`` (text after ``</ranking>`` and a cut completion are format errors;
      the instructions show no placeholder ranking) and ``answerer="span"`` (a tier's score is
      the best answer span of the retrieved turns, so a turn that holds the answer scores 1).
    * v0: initial version (lenient codec, whole-turn token F1).
    """

    state_attrs = ("qa", "conversation", "candidates")

    def __init__(self, split: str = "train", num_candidates: int | None = 10,
                 preview_chars: int = 250, keywords: int = 8, max_rank: int = 10,
                 answerer: str | Answerer = "recall", answer_top_k: int = 5,
                 include_adversarial: bool = False, format_penalty: float = 0.1,
                 max_action_chars: int = 2000, data_path: str | None = None,
                 strict: bool = False) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        for name, value, low in (("num_candidates", 1 if num_candidates is None else
                                  num_candidates, 1), ("preview_chars", preview_chars, 0),
                                 ("keywords", keywords, 0), ("max_rank", max_rank, 1)):
            if value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value}")
        self.answerer = make_answerer(answerer, answer_top_k)
        self.num_candidates, self.preview_chars = num_candidates, preview_chars
        self.keywords, self.max_rank, self.data_path = keywords, max_rank, data_path
        self.format_penalty, self.strict = format_penalty, strict
        self.instructions = INSTRUCTIONS_V1 if strict else INSTRUCTIONS
        conversations = load_locomo(data_path)
        self.questions: list[tuple[int, QA]] = [
            (c, qa) for c in SPLITS[split] for qa in conversations[c].qa
            if include_adversarial or qa.category != ADVERSARIAL]
        if not self.questions:
            raise ConfigError(f"split {split!r} has no questions")
        self.max_steps = 1
        self.codec = RankingCodec()
        turns = [t for c in SPLITS[split] for t in conversations[c].turns]
        most = max(len({t.session for t in conversations[c].turns}) for c in SPLITS[split])
        line = (max(len(t.date) for t in turns) + keywords * (_MAX_KEYWORD_CHARS + 2)
                + preview_chars + 32)
        longest = (len(self.instructions) + max(len(q.question) for _, q in self.questions) + 64
                   + min(most, num_candidates or most) * line)
        self.observation_space = text_space(longest)
        self.action_space = text_space(max_action_chars)

    def _sessions(self) -> tuple[Session, ...]:
        return conversation_sessions(self.conversation, self.keywords, self.data_path)

    def _observation(self) -> str:
        sessions = self._sessions()
        lines = []
        for i, pos in enumerate(self.candidates):
            s = sessions[pos]
            head = s.text[:self.preview_chars] + ("..." if len(s.text) > self.preview_chars
                                                  else "")
            lines.append(f"[{i}] {s.date} | keywords: {', '.join(s.keywords)} | {head}")
        return clean(f"{self.instructions}\nQuestion: {self.qa.question}\nCandidate sessions:\n"
                     + "\n".join(lines))

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode. ``options={"episode": i}`` picks question ``i`` of the split
        instead of a seeded draw (candidates are still drawn with the seed).

        Raises:
            ConfigError: ``options["episode"]`` is out of range.
        """
        super().reset(seed=seed)
        index = (options or {}).get("episode")
        if index is None:
            index = int(self.np_random.integers(len(self.questions)))
        elif not 0 <= index < len(self.questions):
            raise ConfigError(f"episode must be in [0, {len(self.questions)}), got {index}")
        self.conversation, self.qa = self.questions[index]
        sessions = self._sessions()
        conversation = load_locomo(self.data_path)[self.conversation]
        evidence = {conversation.turns[i].session for i in self.qa.evidence}
        gold = [p for p, s in enumerate(sessions) if s.number in evidence]
        n = min(self.num_candidates or len(sessions), len(sessions))
        if len(gold) > n:
            gold = sorted(self.np_random.choice(gold, n, replace=False).tolist())
        others = [p for p in range(len(sessions)) if p not in gold]
        if len(gold) + len(others) > n:
            others = self.np_random.choice(others, n - len(gold), replace=False).tolist()
        self.candidates = tuple(sorted(int(p) for p in gold + others))
        info = {
            "question": self.qa.question, "conversation": conversation.sample_id,
            "candidates": [{"index": i, "session": sessions[p].number, "date": sessions[p].date,
                            "text": sessions[p].text} for i, p in enumerate(self.candidates)],
            "privileged": {"evidence_sessions": [i for i, p in enumerate(self.candidates)
                                                 if p in gold],
                           "answer": self.qa.answer}}
        return self._observation(), info

    def _score(self, ranked: tuple[int, ...]) -> float:
        """The answerer's score given the turns of candidates ``ranked`` (in rank order)."""
        bank = MemoryBank(max_text_chars=100_000)
        sessions = self._sessions()
        for i in ranked:
            for dia_id, text in sessions[self.candidates[i]].turns:
                bank.apply(Add(text), step=0, provenance=dia_id)
        (answered,) = self.answerer.answer([Question(self.qa.question, (self.qa.answer,))], bank)
        return answered.score

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Score the ranking in ``action``; the episode ends."""
        parsed = self.parse(self.codec, action, self.instructions)
        extra: dict[str, Any] = {"ranking": [], "dropped": [], "score_0": None, "tiers": {},
                                 "weights": {}}
        if not parsed.ok:
            terms = {"format": -self.format_penalty, "gain": 0.0}
            info = step_info(parsed, [], terms, "end", **extra)
            return "", float(sum(terms.values())), True, False, info
        (op,) = parsed.ops
        ranking: list[int] = []
        dropped: list[int] = []
        for i in op.order:
            (ranking if 0 <= i < len(self.candidates) and i not in ranking else dropped).append(i)
        tiers = fibonacci_tiers(min(self.max_rank, len(self.candidates)))
        weights = tier_weights(tiers)
        memo = {(): self._score(())}  # tiers past the ranking's length see the same sessions
        for f in tiers:
            top = tuple(ranking[:f])
            if top not in memo:
                memo[top] = self._score(top)
        scores = [memo[tuple(ranking[:f])] for f in tiers]
        gain = float(np.dot(weights, np.asarray(scores) - memo[()]))
        terms = {"format": -self.format_penalty if dropped else 0.0, "gain": gain}
        reason = f"dropped out-of-range or repeated indices {dropped[:20]}" if dropped else ""
        results = [OpResult(op, applied=not dropped, reason=reason)]
        extra.update(ranking=ranking, dropped=dropped, score_0=memo[()],
                     tiers=dict(zip(tiers, scores, strict=True)),
                     weights=dict(zip(tiers, weights, strict=True)))
        info = step_info(parsed, results, terms, "end", **extra)
        return "", float(sum(terms.values())), True, False, info
