"""``memgym/MemAlpha-v0``: Mem-α's memory construction over any task source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memgym.codecs import MemAlphaCodec
from memgym.envs.answerers import Answerer, Question, make_answerer
from memgym.envs.base import MemgymEnv, clean, step_info, text_space
from memgym.envs.mem_alpha.validity import RuleValidityJudge, ValidityJudge
from memgym.envs.sources import QAItem, StreamItem, TaskSource, make_source, pick_instance
from memgym.errors import ConfigError
from memgym.memory import MemoryBank
from memgym.ops import Add, MemoryInsert, MemoryUpdate
from memgym.structured_memory import StructuredMemory

INSTRUCTIONS = (
    "You build a memory of a long text that you read chunk by chunk. Afterwards, questions "
    "about the text are answered from your memory only. Memory: core (one short paragraph, "
    "always shown), semantic (facts), episodic (timestamped events). Keep it concise and "
    "faithful to the text. Call tools, one block per call:\n"
    '<tool_call>{"name": "new_memory_insert", "arguments": {"memory_type": "semantic", '
    '"content": "..."}}</tool_call>\n'
    "Tools: new_memory_insert(memory_type: semantic|episodic, content); "
    "memory_update(memory_type: core|semantic|episodic, new_content, memory_id: omit for core); "
    "memory_delete(memory_type, memory_id: omit for core)."
)
# strict (-v1): no placeholder to copy; the content must come from the chunk
INSTRUCTIONS_V1 = (
    "You build a memory of a long text that you read chunk by chunk. Afterwards, questions "
    "about the text are answered from your memory only. Memory: core (one short paragraph, "
    "always shown), semantic (facts), episodic (timestamped events). Keep it concise and "
    "faithful to the text. Reply with tool calls only, none if the chunk holds nothing worth "
    "keeping: one <tool_call> block per call, each holding a JSON object whose \"name\" is the "
    "tool and whose \"arguments\" is an object of its arguments, and nothing after the last "
    "block. Tools: new_memory_insert(memory_type: semantic|episodic, content); "
    "memory_update(memory_type: core|semantic|episodic, new_content, memory_id: omit for core); "
    "memory_delete(memory_type, memory_id: omit for core). The content and new_content are "
    "what to remember, taken from the chunk."
)


@dataclass(frozen=True)
class Chunk:
    """What the policy reads in one step.

    Attributes:
        text: Stream items rendered ``speaker: text`` (or ``text``), one per line.
        date: The date shared by its items (chunks never mix dates), empty if none.
        item_ids: Ids of the stream items (or item pieces) it holds, in order.
    """

    text: str
    date: str
    item_ids: tuple[str, ...]


def chunk_stream(items: Sequence[StreamItem], chunk_chars: int) -> tuple[Chunk, ...]:
    """Pack consecutive stream items into chunks of at most ``chunk_chars`` characters.

    Items are rendered ``speaker: text`` and packed greedily, one per line. An item that fits
    in a chunk is never split; one longer than ``chunk_chars`` first fills the current chunk
    (if at least a quarter of it is free) and continues in fresh chunks, cut at whitespace; its
    pieces keep its id. Items are never merged across a date change (LoCoMo sessions).

    Args:
        items: The stream, in reading order.
        chunk_chars: Character budget of a chunk (>= 1).

    Returns:
        The chunks, in reading order (items with no text and no speaker are skipped).
    """
    chunks: list[Chunk] = []
    lines: list[str] = []
    ids: list[str] = []
    date = ""

    def flush() -> None:
        if lines:
            chunks.append(Chunk("\n".join(lines), date, tuple(ids)))
            lines.clear()
            ids.clear()

    for item in items:
        text = (f"{item.speaker}: {item.text}" if item.speaker else item.text).strip()
        if item.date != date:
            flush()
            date = item.date
        while text:
            room = chunk_chars - sum(map(len, lines)) - len(lines)
            if len(text) > room and (len(text) <= chunk_chars or room < max(1, chunk_chars // 4)):
                flush()
                continue
            cut = len(text) if len(text) <= room else text.rfind(" ", 0, room + 1)
            cut = room if cut <= 0 else cut
            lines.append(text[:cut].rstrip())
            ids.append(item.id)
            text = text[cut:].lstrip()
    flush()
    return tuple(chunks)


def _tokens(text: str) -> int:
    return len(text.split())


class MemAlphaEnv(MemgymEnv):
    """Mem-α's memory construction: read a stream chunk by chunk and build a structured memory
    (core / semantic / episodic) with tool calls, rewarded by how well a frozen answerer does
    from it afterwards and by how compact, well-formed and grounded the writes are.

    An episode is one instance of the task source (default SQuAD v2: 4 consecutive paragraphs
    of an article and up to 4 of their questions), cut into chunks of at most ``chunk_chars``
    characters (3-6 chunks for 93% of the default instances, at most 11). One generation per
    chunk. After the last chunk the answerer answers the instance's questions from the memory:
    the core paragraph first, then the semantic facts, then the episodic events, as one
    :class:`~memgym.memory.MemoryBank` it retrieves from with BM25 top-``answer_top_k``.

    ## Action Space
    ``Text(max_length=max_action_chars)``: zero or more Hermes ``<tool_call>{"name", "arguments"}
    </tool_call>`` blocks, parsed by :class:`memgym.codecs.MemAlphaCodec`. Tools:
    ``new_memory_insert(memory_type, content)``, ``memory_update(memory_type, new_content,
    memory_id?)``, ``memory_delete(memory_type, memory_id?)``. Text without a block is a step
    with zero calls; a block that does not parse makes the action malformed (no call applied).

    ## Observation Space
    ``Text`` over :data:`memgym.envs.base.CHARSET`: the instructions, ``<core_memory>``,
    ``<semantic_memory>`` and ``<episodic_memory>`` blocks (items as ``[id] content``, the
    ``shown_items`` newest per list; episodic content prefixed by ``[date]``), then ``Chunk i/T``,
    its date and its text. About 1,500-2,000 characters with the defaults plus what
    the policy keeps in memory (bounded by ``shown_items`` per list).

    ## Rewards
    Mem-α's per-step reward ``r_i = acc + β·(1 − mem_tokens/chunk_tokens) + f_i + γ·c_i`` as
    named terms, plus a format penalty (the step reward is the sum of the terms):

    * ``accuracy``: 0 before the last step; on the last step ``acc · T`` where ``acc`` in [0, 1]
      is the answerer's mean score over the questions and ``T`` the episode's number of steps.
      Mem-α gives ``acc`` to every step, but it is only known at the end; adding it ``T`` times
      on the last step keeps per-step rewards causal and makes the undiscounted episode return
      equal the paper's ``Σ_i r_i``. ``info["accuracy"]`` holds ``acc`` itself.
    * ``compression``: ``β · (1 − mem_tokens / chunk_tokens)``, with ``mem_tokens`` the
      whitespace tokens of all memory after the step and ``chunk_tokens`` those of the chunks
      read so far (this one included). Not clipped: it goes negative when memory outgrows the
      text.
    * ``tool_success``: ``f_i``, the fraction of the step's calls that the memory applied; 0
      for a step with no call (a malformed action included), so writing nothing earns nothing.
    * ``validity``: ``γ · c_i``, ``c_i`` the mean validity (``validity_judge``, default
      :class:`RuleValidityJudge`) of the contents the step's applied inserts and updates wrote,
      judged against the current chunk; 0 when the step wrote nothing.
    * ``format``: ``-format_penalty`` when the action is malformed (in strict mode also: a
      completion cut at ``max_new_tokens``, text after the last call, or without any call, a
      content copied from the instructions; see :meth:`~memgym.envs.base.MemgymEnv.parse`),
      else 0.

    ## Starting State
    Empty memory; the first chunk of a seeded instance (or ``options["episode"]``).

    ## Episode End
    Terminates after the last chunk; truncates after ``max_steps`` steps if chunks remain. The
    answerer runs on the last step either way.

    ## Info
    ``ops``, ``op_results``, ``parse_error``, ``reward_terms``, ``segment_end`` (``"overwrite"``:
    every prompt is rebuilt; ``"end"`` on the last step), ``mem_tokens``, ``chunk_tokens``,
    ``tool_success`` (``f_i``), ``validity`` (``c_i``), ``memory_sizes`` (items per type), and
    ``chunk`` (the next chunk: index, num_chunks, date, text). Last step: ``accuracy`` and ``qa``
    (one record per question). ``privileged["answers"]``: ``(question, gold answers)`` of the
    questions whose evidence the next chunk completes (for the oracle). Reset info also has
    ``instance`` and ``num_questions``.

    ## Arguments
    ``source`` (``"squad"``, ``"hotpotqa"``, ``"locomo"`` or a :class:`TaskSource`), ``split``,
    ``chunk_chars``, ``beta``, ``gamma``, ``answerer`` (``"recall"``: max token F1 of the
    retrieved memories taken whole; ``"span"``: of their best answer span; or an
    :class:`Answerer`),
    ``answer_top_k``, ``validity_judge``, ``format_penalty``, ``max_core_chars``,
    ``max_item_chars``, ``max_items`` (per list), ``shown_items``, ``max_action_chars``,
    ``max_steps``, ``strict`` (strict format rules and instructions without a placeholder to
    copy), ``**source_kwargs`` (e.g. ``paragraphs``/``questions`` for SQuAD, ``window`` for
    LoCoMo).

    ## Version History
    * v1: ``strict=True`` (text after the last call or without any call, a cut completion and
      a content copied from the instructions are format errors; the instructions describe the
      calls without placeholder content) and ``answerer="span"`` (a stored answer scores 1,
      not its token F1 against a whole memory).
    * v0: initial version (lenient codec, whole-memory token F1).
    """

    state_attrs = ("instance", "chunks", "memory", "t")

    def __init__(self, source: str | TaskSource = "squad", split: str = "train",
                 chunk_chars: int = 1000, beta: float = 0.05, gamma: float = 0.1,
                 answerer: str | Answerer = "recall", answer_top_k: int = 5,
                 validity_judge: ValidityJudge | None = None, format_penalty: float = 0.1,
                 max_core_chars: int = 512, max_item_chars: int = 512, max_items: int = 200,
                 shown_items: int = 20, max_action_chars: int = 8000, max_steps: int = 64,
                 strict: bool = False, **source_kwargs: Any) -> None:
        answerer = make_answerer(answerer, answer_top_k)
        for name, value in (("chunk_chars", chunk_chars), ("max_steps", max_steps),
                            ("max_core_chars", max_core_chars),
                            ("max_item_chars", max_item_chars)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if beta < 0 or gamma < 0 or shown_items < 0:
            raise ConfigError(f"beta, gamma and shown_items must be >= 0, got {beta}, {gamma} "
                              f"and {shown_items}")
        self.answerer = answerer
        self.judge = validity_judge or RuleValidityJudge()
        self.source = make_source(source, split, **source_kwargs)
        self.chunk_chars, self.beta, self.gamma = chunk_chars, beta, gamma
        self.format_penalty, self.shown_items = format_penalty, shown_items
        self.max_steps, self.strict = max_steps, strict
        self.instructions = INSTRUCTIONS_V1 if strict else INSTRUCTIONS
        self.memory_limits = (max_core_chars, max_item_chars, max_items)
        self.codec = MemAlphaCodec()
        # Bound: instructions + core + shown items (content + id + timestamp) + chunk + headers.
        bound = (len(self.instructions) + max_core_chars + 2 * shown_items * (max_item_chars + 80)
                 + chunk_chars + 512)
        self.observation_space = text_space(bound)
        self.action_space = text_space(max_action_chars)
        self.memory = StructuredMemory(*self.memory_limits)

    def _observation(self) -> str:
        chunk = self.chunks[self.t]
        date = f"Date: {chunk.date}\n" if chunk.date else ""
        text = (f"{self.instructions}\n\n{self.memory.render(self.shown_items)}\n\n"
                f"Chunk {self.t + 1}/{len(self.chunks)}:\n{date}{chunk.text}")
        return clean(text)[:self.observation_space.max_length]

    def _evidence_chunk(self, question: QAItem) -> int:
        """Index of the chunk that completes ``question``'s evidence: among the chunks holding
        its last evidence item, the last that contains a gold answer, else the last one."""
        holding = [k for k, c in enumerate(self.chunks) if question.evidence[-1] in c.item_ids]
        with_answer = [k for k in holding
                       if any(a.lower() in self.chunks[k].text.lower() for a in question.answers)]
        return (with_answer or holding or [-1])[-1]

    def _chunk_info(self) -> dict[str, Any]:
        chunk = self.chunks[self.t]
        answers = [(q.question, list(q.answers)) for q in self.instance.questions
                   if q.answers and q.evidence and self._evidence_chunk(q) == self.t]
        return {"chunk": {"index": self.t, "num_chunks": len(self.chunks), "date": chunk.date,
                          "text": chunk.text},
                "privileged": {"answers": answers}}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode. ``options={"episode": i}`` picks instance ``i`` of a finite source
        instead of a seeded draw.

        Raises:
            ConfigError: ``options["episode"]`` is out of range, or the instance has no items.
        """
        super().reset(seed=seed)
        self.instance = pick_instance(self.source, self.np_random, options)
        self.chunks = chunk_stream(self.instance.items, self.chunk_chars)
        if not self.chunks:
            raise ConfigError(f"instance {self.instance.id} has no stream items")
        self.memory = StructuredMemory(*self.memory_limits)
        self.t = 0
        info = {"instance": self.instance.id, "num_questions": len(self.instance.questions),
                **self._chunk_info()}
        return self._observation(), info

    def _accuracy(self) -> tuple[float, list[dict]]:
        """The answerer's mean score over the questions from the memory, and its records."""
        texts = self.memory.texts()
        bank = MemoryBank(max_text_chars=max(map(len, texts), default=1))
        bank.apply_all([Add(text) for text in texts], step=self.t)
        questions = [Question(q.question, q.answers) for q in self.instance.questions
                     if q.answers]
        answered = self.answerer.answer(questions, bank)
        acc = float(np.mean([a.score for a in answered])) if answered else 0.0
        return acc, [a.__dict__ for a in answered]

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Apply the tool calls in ``action`` for the current chunk and move to the next one."""
        chunk = self.chunks[self.t]
        parsed = self.parse(self.codec, action, self.instructions)
        results = self.memory.apply_all(parsed.ops, step=self.t, timestamp=chunk.date)
        writes = [(r.op.memory_type, (r.op.content if isinstance(r.op, MemoryInsert)
                                      else r.op.new_content).strip())
                  for r in results if r.applied and isinstance(r.op, MemoryInsert | MemoryUpdate)]
        success = float(np.mean([r.applied for r in results])) if results else 0.0
        validity = float(np.mean(self.judge.judge(writes, chunk.text))) if writes else 0.0
        self.t += 1
        mem_tokens = self.memory.num_tokens()
        chunk_tokens = max(1, sum(_tokens(c.text) for c in self.chunks[:self.t]))
        terms = {"accuracy": 0.0, "compression": self.beta * (1.0 - mem_tokens / chunk_tokens),
                 "tool_success": success, "validity": self.gamma * validity,
                 "format": 0.0 if parsed.ok else -self.format_penalty}
        terminated = self.t >= len(self.chunks)
        truncated = not terminated and self.t >= self.max_steps
        extra: dict[str, Any] = {
            "mem_tokens": mem_tokens, "chunk_tokens": chunk_tokens, "tool_success": success,
            "validity": validity,
            "memory_sizes": {name: len(self.memory.items(name))
                             for name in ("semantic", "episodic")}}
        if terminated or truncated:
            acc, extra["qa"] = self._accuracy()
            terms["accuracy"] = acc * self.t
            extra["accuracy"] = acc
            observation = ""
        else:
            extra.update(self._chunk_info())
            observation = self._observation()
        info = step_info(parsed, results, terms, "end" if terminated or truncated else "overwrite",
                         **extra)
        return observation, float(sum(terms.values())), terminated, truncated, info
