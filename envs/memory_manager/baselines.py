"""Scripted baselines for the memory manager (Mem0/Memory-R1 JSON actions; -v3's ratings).

They read the structured ``info["turn"]`` and the related memories shown in the observation (the
oracle also reads ``info["privileged"]``); they are baselines to compare learned policies
against, not stand-ins for the LLM path. Where the env stores the new turn by default
(``info["turn"]["as_memory"]``, ``keep_turns``), they write such ops without text, as a learned
policy would.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memgym.codecs import ImportanceCodec, Mem0JsonCodec
from memgym.engine import Completion
from memgym.ops import Add, MemoryOp, Rate, Update

_RELATED = re.compile(r"^\[(\w+)\] (.*)$", re.MULTILINE)
_FILL = re.compile(r"^Memory bank: (\d+) of (\d+) memories$", re.MULTILINE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9']+")
_STOP = {"what", "when", "where", "which", "who", "whom", "whose", "why", "how", "did", "does",
         "the", "and", "was", "were", "has", "have", "had", "for", "with", "that", "this", "from",
         "his", "her", "their", "they", "she", "him", "about", "after", "before", "would"}
_CHITCHAT = {"hey", "hi", "hello", "thanks", "thank", "wow", "bye", "congrats", "yeah", "lol"}


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _encode(ops: Sequence[MemoryOp], info: dict) -> Completion:
    """``ops`` as Mem0 JSON, without the text of an ADD / UPDATE that stores the turn as said
    where the env takes that as its default."""
    return Completion(Mem0JsonCodec(info["turn"].get("as_memory")).encode(ops))


def _shown(observation: str) -> list[tuple[str, str]]:
    """The ``(id, text)`` of the related memories shown in ``observation``."""
    return _RELATED.findall(observation.split("Related memories:")[-1])


class NoopPolicy:
    """Never writes: ``{"memory": []}`` every step (the reward's lower bound)."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_encode([], info) for info in infos]


class StoreAllPolicy:
    """ADDs every turn verbatim as ``"<speaker>: <text>"``."""

    name = "store-all"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_encode([Add(f"{i['turn']['speaker']}: {i['turn']['text']}")], i) for i in infos]


class Mem0LikePolicy:
    """Rule-based Mem0-style manager: split the turn into sentences, keep informative ones
    (≥ ``min_words`` words, not questions, not chit-chat) as ``"<speaker>: <sentence>"``; a
    sentence whose words overlap a related memory's by Jaccard ≥ ``overlap`` UPDATEs that
    memory if it is longer (Mem0 keeps the more detailed version), else it is skipped.
    """

    name = "mem0-like"

    def __init__(self, min_words: int = 5, overlap: float = 0.5) -> None:
        self.min_words, self.overlap = min_words, overlap

    def _ops(self, observation: str, turn: dict) -> list[MemoryOp]:
        related = _shown(observation)
        ops: list[MemoryOp] = []
        for sentence in _SENTENCE.split(turn["text"]):
            words = _words(sentence)
            if (len(words) < self.min_words or sentence.rstrip().endswith("?")
                    or next(iter(_WORD.findall(sentence.lower())), "") in _CHITCHAT):
                continue
            fact = f"{turn['speaker']}: {sentence.strip()}"
            match = next((mid for mid, text in related
                          if len(words & _words(text)) / len(words | _words(text)) >= self.overlap),
                         None)
            if match is None:
                ops.append(Add(fact))
            elif len(fact) > len(dict(related)[match]):
                ops.append(Update(match, fact))
        return ops

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_encode(self._ops(obs, info["turn"]), info)
                for obs, info in zip(observations, infos, strict=True)]


class EvidencePolicy:
    """Privileged teacher: ADDs the turns that are evidence of a question (``info["privileged"]
    ["evidence"]``) verbatim as ``"<speaker>: <text>"`` and nothing else. What a learned
    manager can imitate from what it sees (the quickstart's SFT warm start): which turns to
    keep, not the answers themselves."""

    name = "evidence"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_encode([Add(f"{i['turn']['speaker']}: {i['turn']['text']}")]
                        if i["privileged"]["evidence"] else [], i) for i in infos]


class EvidenceKeepPolicy:
    """Privileged teacher for a bounded bank (``max_entries``): keep the evidence turns, the
    slots never idle. While the bank has room it ADDs every turn verbatim (as store-all); once
    full, an evidence turn (``info["privileged"]["evidence"]``) UPDATEs the first related memory
    shown that is not evidence (``evidence_shown``), and anything else is NONE. What it imitates
    is a ranking the policy can learn from what it sees: is the new turn more worth keeping than
    a memory it is shown? (With an unbounded bank it is store-all.)"""

    name = "evidence-keep"
    privileged = True

    def _ops(self, observation: str, info: dict) -> list[MemoryOp]:
        fact = f"{info['turn']['speaker']}: {info['turn']['text']}"
        privileged = info["privileged"]
        if not privileged["bank_full"]:
            return [Add(fact)]
        weak = [mid for mid, _ in _shown(observation) if mid not in privileged["evidence_shown"]]
        return [Update(weak[0], fact)] if privileged["evidence"] and weak else []

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_encode(self._ops(obs, info), info)
                for obs, info in zip(observations, infos, strict=True)]


class KeepLongestPolicy:
    """For a bounded bank whose observation shows its fill (``keep_turns``): ADD while the bank
    has room; once full, UPDATE the lowest-ranked memory shown with the new turn if the turn
    ranks higher, else NONE. The rank is the number of words, so the bank keeps the longest
    turns, which are more often evidence in LoCoMo. (Without a fill line it is store-all.)"""

    name = "keep-longest"

    def _rank(self, text: str, info: dict, memory_id: str | None) -> tuple:
        """The rank of the new turn (``memory_id`` None) or of a memory shown: its words."""
        return (len(text.split()),)

    def _ops(self, observation: str, info: dict) -> list[MemoryOp]:
        fact = f"{info['turn']['speaker']}: {info['turn']['text']}"
        fill = _FILL.search(observation)
        if fill is None or int(fill[1]) < int(fill[2]):
            return [Add(fact)]
        shown = _shown(observation)
        if not shown:
            return []
        weakest = min(shown, key=lambda memory: self._rank(memory[1], info, memory[0]))
        keep = self._rank(fact, info, None) > self._rank(weakest[1], info, weakest[0])
        return [Update(weakest[0], fact)] if keep else []

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_encode(self._ops(obs, info), info)
                for obs, info in zip(observations, infos, strict=True)]


class EvidenceLongestPolicy(KeepLongestPolicy):
    """Privileged teacher for -v2: keep-longest whose rank puts evidence first (is the turn or
    memory evidence of a question, ``info["privileged"]``; then its words). Unlike
    :class:`EvidenceKeepPolicy`, most of its choices follow what the policy sees (the length),
    so an imitator has fewer choices it cannot explain from its prompt (the "imitation gap" of a
    privileged teacher: Weihs et al., 2021, Bridging the Imitation Gap by Adaptive
    Insubordination)."""

    name = "evidence-longest"
    privileged = True

    def _rank(self, text: str, info: dict, memory_id: str | None) -> tuple:
        """(evidence, words) of the new turn (``memory_id`` None) or of a memory shown."""
        privileged = info["privileged"]
        evidence = (privileged["evidence"] if memory_id is None
                    else memory_id in privileged["evidence_shown"])
        return (evidence, len(text.split()))


class OraclePolicy:
    """Upper bound from gold data: at the item that completes a question's evidence, ADD its gold
    answer tagged with the question's longest content word (so BM25 on the question finds it);
    nothing otherwise."""

    name = "oracle"

    @staticmethod
    def _fact(question: str, answer: str) -> str:
        words = [w for w in _WORD.findall(question.lower()) if w not in _STOP]
        return f"{answer} ({max(words, key=len)})" if words else answer

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_encode([Add(self._fact(q, a)) for q, a in info["privileged"]["answers"]], info)
                for info in infos]


BASELINES = {p.name: p for p in (OraclePolicy, EvidencePolicy, EvidenceKeepPolicy, Mem0LikePolicy,
                                 StoreAllPolicy, NoopPolicy)}
# -v2 (keep_turns): the bank's fill is shown, so a rule can choose what a full bank keeps
KEEP_BASELINES = {**BASELINES, **{p.name: p for p in (EvidenceLongestPolicy, KeepLongestPolicy)}}


def _rated(score: int) -> Completion:
    """``{"importance": score}`` (-v3, ``rate_turns``)."""
    return Completion(ImportanceCodec().encode([Rate(score)]))


def _length_score(text: str, lowest: int, highest: int, words_per_point: int) -> int:
    """``lowest`` plus a point per ``words_per_point`` words of ``text``, at most ``highest``."""
    return min(highest, lowest + len(text.split()) // words_per_point)


class RateNoopPolicy:
    """-v3: rates every turn 0, so the bank stays empty (the reward's lower bound)."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_rated(0) for _ in infos]


class RateAllPolicy:
    """-v3: rates every turn 5; a full bank keeps what it holds (a tie does not replace), so the
    bank keeps the first turns, as store-all does."""

    name = "store-all"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_rated(5) for _ in infos]


class RateLengthPolicy:
    """-v3: rates a turn by its length, 1 plus a point per ``words_per_point`` words, at most 9,
    so the bank keeps the longest turns (keep-longest's rule at the scale's resolution)."""

    name = "rate-length"

    def __init__(self, words_per_point: int = 6) -> None:
        self.words_per_point = words_per_point

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_rated(_length_score(i["turn"]["text"], 1, 9, self.words_per_point))
                for i in infos]


class RateEvidencePolicy:
    """Privileged teacher and the oracle of -v3 (whose action cannot write an answer, only keep
    a turn): rates an evidence turn of a question (``info["privileged"]["evidence"]``) 5 to 9
    and any other 1 to 4, each by its length (a point per ``words_per_point`` words), so the
    bank keeps the longest evidence turns and fills its other slots with the longest of the rest
    (evidence-longest's order)."""

    name = "oracle"
    privileged = True

    def __init__(self, words_per_point: int = 8) -> None:
        self.words_per_point = words_per_point

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_rated(_length_score(i["turn"]["text"], 5, 9, self.words_per_point)
                       if i["privileged"]["evidence"]
                       else _length_score(i["turn"]["text"], 1, 4, self.words_per_point))
                for i in infos]


# -v3 (rate_turns): the action is a rating, so every policy writes one
RATE_BASELINES = {p.name: p for p in (RateEvidencePolicy, RateLengthPolicy, RateAllPolicy,
                                      RateNoopPolicy)}
