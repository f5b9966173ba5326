"""``memgym/LoCoMoMemoryManager-v0``: Memory-R1's memory manager over any task source."""

from __future__ import annotations

from dataclasses import replace
from itertools import islice
from typing import Any

import numpy as np

from memgym.codecs import ImportanceCodec, Mem0JsonCodec
from memgym.envs.answerers import Answerer, Question, make_answerer
from memgym.envs.base import MemgymEnv, clean, step_info, text_space
from memgym.envs.sources import TaskInstance, TaskSource, make_source, pick_instance
from memgym.errors import ConfigError
from memgym.memory import BankSnapshot, MemoryBank, MemoryEntry
from memgym.ops import Add, OpResult, Rate, Update

INSTRUCTIONS = (
    "You manage a memory bank about a conversation. Reply with JSON only: "
    '{"memory": [{"event": "ADD", "text": "<new fact>"}]}. '
    'Events: ADD a new fact; UPDATE {"id", "text"} to refine a memory; DELETE {"id"} a wrong '
    'memory; NONE if nothing is worth keeping.'
)
# strict (-v1): no placeholder to copy; the op text must come from the turn
INSTRUCTIONS_V1 = (
    "You manage a memory bank about a conversation. After each new turn, reply with one JSON "
    'object and nothing else: {"memory": [item, item]}, a list of items. An item with "event": '
    '"ADD" and "text" stores a fact stated in the new turn, written as a full sentence that names '
    'who, what and when; "UPDATE" with the "id" of a related memory and a "text" rewrites it '
    'with the new details; "DELETE" with an "id" removes a memory the turn shows is wrong; '
    '"NONE" stores nothing. Keep every fact that someone could later ask about.'
)
# keep_turns (-v2 of the LoCoMo manager): the policy chooses which turns the bank keeps
INSTRUCTIONS_KEEP = (
    "You keep a memory bank of {capacity} about a conversation: the turns that questions asked "
    "later will need (facts, names, places, dates, plans). After each new turn, reply with one "
    'JSON object and nothing else: {{"memory": [{{"event": "ADD"}}]}} stores the new turn; '
    '{{"memory": [{{"event": "UPDATE", "id": "2"}}]}} replaces memory [2] with it; '
    '{{"memory": [{{"event": "NONE"}}]}} stores nothing. A full bank rejects ADD.'
)
# rate_turns (-v3 of the LoCoMo manager): the policy rates each turn, the bank keeps the best
INSTRUCTIONS_RATE = (
    "You rate the turns of a conversation for a memory bank that keeps the {capacity}"
    "highest-rated turns: the turns that questions asked later will need (facts, names, places, "
    "dates, plans). After each new turn, reply with one JSON object and nothing else: the key "
    '"importance" and an integer from 0 (nothing worth keeping: not stored) to 9 (certainly '
    "needed). A full bank replaces its lowest-rated memory with a turn rated higher."
)
MAX_SCORE = 9  # ratings run 0..9: one token each in common tokenizers


class MemoryManagerEnv(MemgymEnv):
    """Memory-R1's memory manager: read a stream item by item and edit a memory bank.

    An episode is one instance of the task source (default LoCoMo: a seeded window of
    ``window`` dialogue turns that holds the full evidence of at least one QA pair). At each step
    the policy sees the new item and the ``related_k`` memories most related to it (BM25), and
    answers with Mem0/Memory-R1 JSON ops. After the last item an *answer agent* answers the
    instance's questions from the bank.

    ## Action Space
    ``Text(max_length=max_action_chars)``: the policy's raw text, parsed by
    :class:`memgym.codecs.Mem0JsonCodec`. Text that does not parse is a valid action: it applies
    no op and is penalized. With ``keep_turns``, an ADD / UPDATE without ``"text"`` stores the new
    item as said (``speaker: text``): the policy chooses what to keep, not how to word it. With
    ``rate_turns``, the text is ``{"importance": n}`` (:class:`memgym.codecs.ImportanceCodec`,
    n in 0..9): a turn rated 0 is not stored; while the bank has room, one rated higher is; once
    it is full, a turn rated above the bank's lowest-rated memory replaces it (the first such
    memory in the bank's order), else it is not stored; a turn over ``max_memory_chars`` is never
    stored.

    ## Observation Space
    ``Text(max_length=16384)`` over :data:`memgym.envs.base.CHARSET`: the instructions, the
    item's date, the new item (``speaker: text``) and the related memories as ``[id] text``; with
    ``keep_turns`` also the bank's fill (``Memory bank: n of max_entries memories``), and the
    related memories are topped up to ``related_k`` with the bank's others (oldest first), so a
    bank of at most ``related_k`` is shown whole; with ``rate_turns`` only the instructions, the
    date and the new item (the bank decides what a rating evicts).

    ## Rewards
    ``format``: ``-format_penalty`` on a step whose action does not parse (in strict mode also:
    a completion cut at ``max_new_tokens``, text after the JSON value, op text copied from the
    instructions; see :meth:`~memgym.envs.base.MemgymEnv.parse`), else 0.
    ``qa``: on the last step, the mean score in [0, 1] of the answer agent over the instance's
    questions (with ``timestamps``, it reads each memory prefixed by the date of the turn that
    last wrote it; ``answerer="recall"``: max token-F1 of the top-k retrieved memories taken whole;
    ``"span"``: of their best answer span, 1 wherever a retrieved memory holds the answer; an
    :class:`LLMAnswerer` gives Memory-R1's frozen-answerer F1/EM). The step reward is their
    sum.

    ## Starting State
    An empty memory bank; the first item of the instance.

    ## Episode End
    Terminates after the instance's last item (``max_steps`` = the source's longest stream for
    finite sources). Never truncates.

    ## Info
    ``ops``, ``op_results`` (with ``rate_turns``, a rating is applied with the ``id`` of the
    memory that now holds the turn, or with ``id`` None where the turn was not stored; it is
    rejected only where the bank refuses the text), ``parse_error``, ``reward_terms``,
    ``segment_end`` (``"overwrite"``: each prompt is rebuilt, so every step is its own segment;
    ``"end"`` on the last step),
    ``bank_size``, ``turn`` (the next item: id, speaker, date, text; with ``keep_turns`` or
    ``rate_turns`` also ``as_memory``, the text a stored turn gets), on the last step ``qa`` (one
    :class:`~memgym.envs.answerers.Answered` record per question: prediction, score and the
    ``retrieved`` / ``supporting`` entry ids that memory metrics read), and
    ``privileged["answers"]``: the ``(question, answer)`` pairs whose last evidence is the
    current item, ``evidence``: whether the item is evidence of any answerable question,
    ``evidence_shown``: the ids of the related memories shown that were last written from such
    an item, and ``bank_full``: whether the bank holds ``max_entries`` (for the oracle and the
    evidence teachers; ``privileged`` is never recorded in trajectories).

    ## Arguments
    ``source`` (a registered source name or a :class:`TaskSource`; ``locomo`` takes ``window``,
    ``include_adversarial``, ``data_path``; ``longmemeval`` takes ``variant``, ``haystack``,
    ``max_item_chars``, ``data_path``), ``split`` (``train`` / ``val`` / ``test``; LoCoMo also
    ``train-wide``),
    ``related_k``, ``answerer`` (``"recall"``, ``"served:<name>"``, an Answerer), ``answer_top_k``,
    ``format_penalty``, ``max_action_chars``, ``max_entries``, ``max_memory_chars``,
    ``max_steps`` (None: the longest instance of a finite source, e.g. whole LongMemEval
    haystacks; ``reset`` refuses a longer instance),
    ``strict`` (strict format rules and instructions without a placeholder to copy),
    ``timestamps`` (the answer agent reads memories with their dates),
    ``keep_turns`` (ADD / UPDATE without text store the new item; the observation shows the
    bank's fill; ``info["turn"]["as_memory"]`` is the text they store),
    ``rate_turns`` (the action rates the new item; the bank keeps the highest-rated items; with
    ``keep_turns`` a ``ConfigError``),
    ``**source_kwargs`` (forwarded to the source).

    ## Version History
    * v3 (LoCoMo only): ``rate_turns=True``: the policy rates each turn's importance (0..9) and
      a bounded bank keeps the highest-rated turns, as Generative Agents' memory stream rates
      each observation (Park et al., 2023); v2's task with a one-token decision per turn.
    * v2 (LoCoMo only): ``keep_turns=True``: which turns a bounded bank keeps (ADD / UPDATE
      store the new turn as said; the observation shows the bank's fill and tops up the related
      memories), on v1's rules.
    * v1: ``strict=True`` (text after the JSON, a cut completion and op text copied from the
      instructions are format errors; the instructions show no placeholder) and
      ``answerer="span"`` (the stored answer scores 1, not its token F1 against a whole memory)
      and ``timestamps=True`` (the answer agent reads dated memories, as Memory-R1's does).
    * v0: initial version (lenient codec, whole-memory token F1).
    """

    state_attrs = ("instance", "bank", "t", "ratings")
    _evidence_of: tuple[TaskInstance, dict, set] | None = None  # (instance, QAs by item, evidence)

    def __init__(self, source: str | TaskSource = "locomo", split: str = "train",
                 related_k: int = 3, answerer: str | Answerer = "recall", answer_top_k: int = 5,
                 format_penalty: float = 0.1, max_action_chars: int = 2000,
                 max_entries: int | None = None, max_memory_chars: int = 500,
                 max_steps: int | None = 64, strict: bool = False, timestamps: bool = False,
                 keep_turns: bool = False, rate_turns: bool = False,
                 **source_kwargs: Any) -> None:
        if keep_turns and rate_turns:
            raise ConfigError("keep_turns and rate_turns are two action formats (-v2's Mem0 ops "
                              "without text, -v3's ratings): give one")
        self.answerer = make_answerer(answerer, answer_top_k)
        self.source = make_source(source, split, **source_kwargs)
        if max_steps is None:
            if self.source.num_instances is None:
                raise ConfigError(f"max_steps=None needs a finite source; {self.source.name!r} "
                                  f"is unbounded: give max_steps")
            max_steps = max(len(self.source.instance(i).items)
                            for i in range(self.source.num_instances))
        self.related_k, self.format_penalty = related_k, format_penalty
        self.max_entries, self.max_memory_chars = max_entries, max_memory_chars
        self.max_steps, self.strict, self.timestamps = max_steps, strict, timestamps
        self.keep_turns, self.rate_turns = keep_turns, rate_turns
        capacity = "memories" if max_entries is None else f"at most {max_entries} memories"
        self.instructions = (
            INSTRUCTIONS_RATE.format(capacity="" if max_entries is None else f"{max_entries} ")
            if rate_turns else INSTRUCTIONS_KEEP.format(capacity=capacity) if keep_turns
            else INSTRUCTIONS_V1 if strict else INSTRUCTIONS)
        self.codec = ImportanceCodec(MAX_SCORE) if rate_turns else Mem0JsonCodec()
        self.observation_space = text_space(16384)
        self.action_space = text_space(max_action_chars)
        self.bank = MemoryBank(max_entries, max_memory_chars)
        self.ratings: dict[str, int] = {}  # rate_turns: entry id -> the rating that stored it
        self._shown: list[MemoryEntry] = []  # the related memories of the last observation

    def _as_memory(self) -> str:
        """The current item as a memory: ``"speaker: text"``."""
        item = self.instance.items[self.t]
        return f"{item.speaker}: {item.text}" if item.speaker else item.text

    def _observation(self) -> str:
        item = self.instance.items[self.t]
        if self.rate_turns:
            return clean(f"{self.instructions}\nDate: {item.date}\nNew turn: {self._as_memory()}")
        query = f"{item.speaker} {item.text}"
        self._shown = [entry for entry, _ in self.bank.search(query, self.related_k)]
        bank = ""
        if self.keep_turns:  # the bank's fill, and its other memories up to related_k
            ids = {entry.id for entry in self._shown}
            self._shown += islice((e for e in self.bank if e.id not in ids),
                                  self.related_k - len(self._shown))
            capacity = "" if self.max_entries is None else f" of {self.max_entries}"
            bank = f"Memory bank: {len(self.bank)}{capacity} memories\n"
        related = "\n".join(f"[{entry.id}] {entry.text}" for entry in self._shown)
        return clean(f"{self.instructions}\nDate: {item.date}\nNew turn: {self._as_memory()}\n"
                     f"{bank}Related memories:\n{related or '(none)'}")

    def _reader_bank(self) -> MemoryBank:
        """The bank as the answer agent reads it: with ``timestamps``, each entry prefixed by
        the date of the turn at which it was last written (Memory-R1's answer agent reads
        timestamped memories), else the bank itself."""
        if not self.timestamps:
            return self.bank
        snap, items = self.bank.snapshot(), self.instance.items
        stamped = MemoryBank()
        stamped.restore(BankSnapshot(tuple(
            replace(e, text=f"({items[e.updated_step].date}) {e.text}")
            if items[e.updated_step].date else e for e in snap.entries), snap.next_id))
        return stamped

    def _item_info(self) -> dict[str, Any]:
        """The next item's info; call after :meth:`_observation` (it reads the memories shown)."""
        item = self.instance.items[self.t]
        if self._evidence_of is None or self._evidence_of[0] is not self.instance:
            answered: dict[str, list[tuple[str, str]]] = {}  # last evidence item -> its QAs
            evidence: set[str] = set()  # items that are evidence of an answerable question
            for q in self.instance.questions:
                if q.answers:
                    evidence.update(q.evidence)
                    if q.evidence:
                        answered.setdefault(q.evidence[-1], []).append((q.question,
                                                                        q.answers[0]))
            self._evidence_of = (self.instance, answered, evidence)  # per instance, O(1) a step
        _, answered, evidence = self._evidence_of
        full = self.max_entries is not None and len(self.bank) >= self.max_entries
        turn = {"id": item.id, "speaker": item.speaker, "date": item.date, "text": item.text}
        if self.keep_turns or self.rate_turns:
            turn["as_memory"] = self._as_memory()
        return {"turn": turn,
                "privileged": {"answers": list(answered.get(item.id, ())),
                               "evidence": item.id in evidence, "bank_full": full,
                               "evidence_shown": [e.id for e in self._shown
                                                  if e.provenance in evidence]}}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode. ``options={"episode": i}`` picks instance ``i`` of a finite source
        instead of a seeded draw.

        Raises:
            ConfigError: ``options["episode"]`` is out of range, or the source's instance is
                longer than ``max_steps``.
        """
        super().reset(seed=seed)
        self.instance = pick_instance(self.source, self.np_random, options)
        if not 0 < len(self.instance.items) <= self.max_steps:
            raise ConfigError(f"instance {self.instance.id} has {len(self.instance.items)} "
                              f"items; expected 1..max_steps={self.max_steps}")
        self.bank = MemoryBank(self.max_entries, self.max_memory_chars)
        self.ratings = {}
        self.t = 0
        observation = self._observation()
        info = {"instance": self.instance.id, "num_questions": len(self.instance.questions),
                "bank_size": 0, **self._item_info()}
        return observation, info

    def _keep(self, op: Rate) -> OpResult:
        """Store the current item by its rating ``op.score`` (``rate_turns``; see Action Space)."""
        item = self.instance.items[self.t]
        if op.score == 0:
            return OpResult(op, True)  # not stored, as asked
        if self.max_entries is None or len(self.bank) < self.max_entries:
            stored = self.bank.apply(Add(self._as_memory()), self.t, item.id)
        else:
            weakest = min(self.bank, key=lambda entry: self.ratings[entry.id])
            floor = self.ratings[weakest.id]
            if op.score <= floor:  # not above the bank's lowest: not stored, by the rule
                return OpResult(op, True)
            stored = self.bank.apply(Update(weakest.id, self._as_memory()), self.t, item.id)
        if stored.applied:
            self.ratings[stored.id] = op.score
        return OpResult(op, stored.applied, stored.id, stored.reason)

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Apply the ops in ``action`` for the current item and move to the next item."""
        item = self.instance.items[self.t]
        codec = Mem0JsonCodec(self._as_memory()) if self.keep_turns else self.codec
        parsed = self.parse(codec, action, self.instructions)
        results = ([self._keep(op) for op in parsed.ops] if self.rate_turns
                   else self.bank.apply_all(parsed.ops, step=self.t, provenance=item.id))
        terms = {"format": 0.0 if parsed.ok else -self.format_penalty, "qa": 0.0}
        self.t += 1
        terminated = self.t >= len(self.instance.items)
        extra: dict[str, Any] = {"bank_size": len(self.bank)}
        if terminated:
            questions = [Question(q.question, q.answers) for q in self.instance.questions]
            answered = self.answerer.answer(questions, self._reader_bank())
            scores = [a.score for a in answered]
            # np.mean's arithmetic (a float64 add.reduce, then one division), bit for bit,
            # without its Python-level dispatch, which cost ~5% of a replayed step
            terms["qa"] = (float(np.add.reduce(scores, dtype=np.float64)) / len(scores)
                           if scores else 0.0)
            extra["qa"] = [a.__dict__ for a in answered]
            observation = ""
        else:
            observation = self._observation()
            extra.update(self._item_info())
        info = step_info(parsed, results, terms, "end" if terminated else "overwrite", **extra)
        return observation, float(sum(terms.values())), terminated, False, info
