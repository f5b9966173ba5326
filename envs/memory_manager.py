"""``memgym/LoCoMoMemoryManager-v0``: the Memory-R1 memory manager on LoCoMo."""

from __future__ import annotations

import string
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from memgym.codecs import Mem0JsonCodec
from memgym.envs.answerers import Answerer, Question, RecallAnswerer
from memgym.envs.locomo import SPLITS, load_locomo
from memgym.errors import ConfigError
from memgym.memory import MemoryBank
from memgym.ops import op_to_dict
from memgym.retrieval import BM25Index

INSTRUCTIONS = (
    "You manage a memory bank about a conversation. Reply with JSON only: "
    '{"memory": [{"event": "ADD", "text": "<new fact>"}]}. '
    'Events: ADD a new fact; UPDATE {"id", "text"} to refine a memory; DELETE {"id"} a wrong '
    'memory; NONE if nothing is worth keeping.'
)


class LoCoMoMemoryManagerEnv(gym.Env):
    """Memory-R1's memory manager: read a LoCoMo conversation turn by turn and edit a memory bank.

    An episode is a window of ``window`` consecutive dialogue turns of one conversation of the
    split, chosen (seeded) among windows that contain the full evidence of at least one QA pair.
    At each step the policy sees the new turn and the ``related_k`` memories most related to it
    (BM25), and answers with Mem0/Memory-R1 JSON ops. After the last turn an *answer agent*
    answers the window's questions from the bank.

    ## Action Space
    ``Text(max_length=max_action_chars)``: the policy's raw text, parsed by
    :class:`memgym.codecs.Mem0JsonCodec`. Text that does not parse is a valid action: it applies
    no op and is penalized.

    ## Observation Space
    ``Text(max_length=16384)`` over printable ASCII plus every character in LoCoMo: the
    instructions, the session date, the new turn and the related memories as ``[id] text``.
    Characters of memory texts outside the charset are shown as ``?``.

    ## Rewards
    ``format``: ``-format_penalty`` on a step whose action does not parse, else 0.
    ``qa``: on the last step, the mean score in [0, 1] of the answer agent over the window's QA
    pairs (``answerer="recall"``: max token-F1 of the top-k retrieved memories; an
    :class:`LLMAnswerer` gives Memory-R1's frozen-answerer F1/EM). The step reward is their sum.

    ## Starting State
    An empty memory bank; the first turn of the window.

    ## Episode End
    Terminates after the window's last turn (``window`` steps). Never truncates.

    ## Info
    ``ops``, ``op_results``, ``parse_error``, ``bank_size``, ``turn`` (dia_id, speaker),
    ``reward_terms``, ``segment_end`` (``"overwrite"``: each prompt is rebuilt, so every step is
    its own segment; ``"end"`` on the last step), and on the last step ``qa`` (one record per
    question with prediction and score).

    ## Arguments
    ``split`` (``train``: conversation 1, ``val``: 2, ``test``: 3-10), ``window`` (turns per
    episode), ``related_k``, ``answerer`` (``"recall"`` or an :class:`Answerer`), ``answer_top_k``,
    ``format_penalty``, ``max_action_chars``, ``max_entries``, ``max_memory_chars``,
    ``include_adversarial`` (category 5, off as in Memory-R1), ``data_path``.

    ## Version History
    * v0: initial version.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, split: str = "train", window: int = 8, related_k: int = 3,
                 answerer: str | Answerer = "recall", answer_top_k: int = 5,
                 format_penalty: float = 0.1, max_action_chars: int = 2000,
                 max_entries: int | None = None, max_memory_chars: int = 500,
                 include_adversarial: bool = False, data_path: str | None = None) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if window < 1:
            raise ConfigError(f"window must be >= 1, got {window}")
        if isinstance(answerer, str):
            if answerer != "recall":
                raise ConfigError(f"answerer must be 'recall' or an Answerer, got {answerer!r}")
            answerer = RecallAnswerer(top_k=answer_top_k)
        self.answerer = answerer
        self.split, self.window, self.related_k = split, window, related_k
        self.format_penalty = format_penalty
        self.max_entries, self.max_memory_chars = max_entries, max_memory_chars
        self.codec = Mem0JsonCodec()
        conversations = load_locomo(data_path)
        self.conversations = [conversations[i] for i in SPLITS[split]]
        self.episodes = self._episodes(include_adversarial)
        if not self.episodes:
            raise ConfigError(f"no window of {window} turns holds the evidence of a QA pair")
        chars = set(string.printable) | set(INSTRUCTIONS)
        for conv in conversations:
            for turn in conv.turns:
                chars.update(turn.text, turn.speaker, turn.date)
        self._charset = frozenset(chars)
        charset = "".join(sorted(chars))
        self.observation_space = spaces.Text(max_length=16384, min_length=0, charset=charset)
        self.action_space = spaces.Text(max_length=max_action_chars, min_length=0,
                                        charset=charset)
        self.bank = MemoryBank(max_entries, max_memory_chars)

    def _episodes(self, include_adversarial: bool) -> list[tuple[int, int, tuple[int, ...]]]:
        """All (conversation, start turn, QA indices) windows holding >= 1 QA's evidence."""
        episodes = []
        for c, conv in enumerate(self.conversations):
            qas = [(i, q) for i, q in enumerate(conv.qa)
                   if include_adversarial or q.category != 5]
            for start in range(max(1, len(conv.turns) - self.window + 1)):
                end = start + self.window
                inside = tuple(i for i, q in qas if q.evidence[0] >= start and q.evidence[-1] < end)
                if inside:
                    episodes.append((c, start, inside))
        return episodes

    def _clean(self, text: str) -> str:
        return "".join(ch if ch in self._charset else "?" for ch in text)

    def _observation(self) -> str:
        turn = self.turns[self.t]
        query = f"{turn.speaker} {turn.text}"
        entries = self.bank.entries()
        hits = BM25Index([e.text for e in entries]).search(query, self.related_k)
        related = "\n".join(f"[{entries[i].id}] {self._clean(entries[i].text)}" for i, _ in hits)
        return (f"{INSTRUCTIONS}\nDate: {turn.date}\nNew turn: {turn.speaker}: {turn.text}\n"
                f"Related memories:\n{related or '(none)'}")

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode. ``options={"episode": i}`` picks window ``i`` of ``self.episodes``
        instead of a seeded draw.

        Raises:
            ConfigError: ``options["episode"]`` is out of range.
        """
        super().reset(seed=seed)
        index = (options or {}).get("episode")
        if index is None:
            index = int(self.np_random.integers(len(self.episodes)))
        elif not 0 <= index < len(self.episodes):
            raise ConfigError(f"episode must be in [0, {len(self.episodes)}), got {index}")
        c, start, qa_ids = self.episodes[index]
        conv = self.conversations[c]
        self.turns = conv.turns[start:start + self.window]
        self.questions = [Question(conv.qa[i].question, conv.qa[i].answer) for i in qa_ids]
        self.bank = MemoryBank(self.max_entries, self.max_memory_chars)
        self.t = 0
        info = {"episode": index, "conversation": conv.sample_id, "start_turn": start,
                "num_questions": len(self.questions), "bank_size": 0,
                "turn": {"dia_id": self.turns[0].dia_id, "speaker": self.turns[0].speaker,
                         "text": self.turns[0].text}}
        return self._observation(), info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Apply the ops in ``action`` for the current turn and move to the next turn."""
        turn = self.turns[self.t]
        parsed = self.codec.decode(action if isinstance(action, str) else str(action))
        results = self.bank.apply_all(parsed.ops, step=self.t, provenance=turn.dia_id)
        terms = {"format": 0.0 if parsed.ok else -self.format_penalty, "qa": 0.0}
        self.t += 1
        terminated = self.t >= len(self.turns)
        info: dict[str, Any] = {
            "ops": [op_to_dict(op) for op in parsed.ops],
            "op_results": [r.to_dict() for r in results],
            "parse_error": parsed.error.to_dict() if parsed.error else None,
            "bank_size": len(self.bank),
            "segment_end": "end" if terminated else "overwrite",
        }
        if terminated:
            answered = self.answerer.answer(self.questions, self.bank)
            terms["qa"] = float(np.mean([a.score for a in answered]))
            info["qa"] = [a.__dict__ for a in answered]
            observation = ""
        else:
            nxt = self.turns[self.t]
            info["turn"] = {"dia_id": nxt.dia_id, "speaker": nxt.speaker, "text": nxt.text}
            observation = self._observation()
        info["reward_terms"] = terms
        return observation, float(sum(terms.values())), terminated, False, info
