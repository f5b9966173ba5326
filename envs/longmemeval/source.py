"""LongMemEval as a :class:`~memgym.envs.sources.TaskSource`: whole chat histories."""

from __future__ import annotations

from memgym.envs.longmemeval.data import ABSTENTION, Haystack, load_longmemeval
from memgym.envs.sources import FiniteSource, QAItem, StreamItem, TaskInstance
from memgym.errors import ConfigError


def split_text(text: str, limit: int) -> list[str]:
    """``text`` cut into parts of at most ``limit`` characters, at the last space or newline
    before the limit (mid-word only where a part has none).

    Returns:
        One part for a text within the limit (the text itself); no part is empty unless
        ``text`` is.
    """
    parts = []
    while len(text) > limit:
        cut = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit))
        cut = cut if cut > 0 else limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return [*parts, text]


def _instance(haystack: Haystack, max_item_chars: int) -> TaskInstance:
    items: list[StreamItem] = []
    by_session: dict[str, list[str]] = {}  # session id -> its item ids
    marked: dict[str, list[str]] = {}  # session id -> the item ids of its has_answer turns
    for session in haystack.sessions:
        for t, turn in enumerate(session.turns):
            parts = split_text(turn.content.strip(), max_item_chars)
            ids = [f"{session.id}:{t}" if len(parts) == 1 else f"{session.id}:{t}.{p}"
                   for p in range(len(parts))]
            items += [StreamItem(i, text, session.date, turn.role)
                      for i, text in zip(ids, parts, strict=True)]
            by_session.setdefault(session.id, []).extend(ids)
            if turn.has_answer:
                marked.setdefault(session.id, []).extend(ids)
    position = {item.id: k for k, item in enumerate(items)}
    questions = []
    for q in haystack.questions:
        evidence: set[str] = set()
        if q.group != ABSTENTION:  # an abstention question has no answer in the history
            for sid in q.answer_session_ids:
                evidence.update(marked.get(sid) or by_session.get(sid, ()))
        questions.append(QAItem(q.question, (q.answer,), tuple(sorted(evidence, key=position.get)),
                                q.group))
    return TaskInstance(haystack.question_id, tuple(items), tuple(questions))


class LongMemEvalSource(FiniteSource):
    """Each LongMemEval haystack whole, as one instance: every turn of its sessions (in
    chronological order) is a stream item with the session's timestamp as ``date`` and the
    turn's role (``user`` / ``assistant``) as ``speaker``; its questions are asked after the
    last one, with the reported question group (``single-session``, ``multi-session``,
    ``temporal-reasoning``, ``knowledge-update``, ``abstention``, or ``third-party`` for the
    sample's questions that are not LongMemEval's) as ``category``.

    Item ids are ``"<session id>:<turn>"``; a turn longer than ``max_item_chars`` is cut into
    parts (:func:`split_text`) with ids ``"<session id>:<turn>.<part>"``, so that an item fits
    the memory manager's observation and a memory. A question's evidence is the items of the
    turns LongMemEval marks ``has_answer`` in its evidence sessions (all items of an evidence
    session with no marked turn); abstention questions have none.

    Args:
        split: ``test`` only: LongMemEval is an evaluation benchmark with no training split.
        variant: ``sample`` (3 haystacks, mostly third-party questions), ``s`` / ``m``
            (LongMemEval_S / _M, cleaned) or ``oracle``; see
            :mod:`memgym.envs.longmemeval.data` for where the official files go.
        data_path: Read this file (either schema) instead of ``variant``'s.
        haystack: Only this haystack (0-based index in the file), or None for all of them.
        max_item_chars: Longest stream item (>= 1); longer turns are cut into parts.

    Raises:
        ConfigError: Bad split, haystack or ``max_item_chars``.
        DataNotFoundError: The variant's file is in no data dir.
        DataFormatError: The file is not LongMemEval's schema.
    """

    name = "longmemeval"

    def __init__(self, split: str = "test", variant: str = "sample",
                 data_path: str | None = None, haystack: int | None = None,
                 max_item_chars: int = 2000) -> None:
        if split != "test":
            raise ConfigError(f"split must be 'test' (LongMemEval has no training split), "
                              f"got {split!r}")
        if max_item_chars < 1:
            raise ConfigError(f"max_item_chars must be >= 1, got {max_item_chars}")
        haystacks = load_longmemeval(variant, data_path)
        if haystack is not None:
            if not 0 <= haystack < len(haystacks):
                raise ConfigError(f"haystack must be in [0, {len(haystacks)}), got {haystack}")
            haystacks = haystacks[haystack:haystack + 1]
        super().__init__([_instance(h, max_item_chars) for h in haystacks])
