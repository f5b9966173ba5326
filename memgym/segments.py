"""Cutting a trajectory's steps into training segments (DCPO).

A *segment* is a contiguous run of steps whose prompts share a growing prefix; it is trained as
one prompt+completion sample (DCPO, MemAct). The env declares where a segment ends
(``info["segment_end"]``: ``edit`` / ``overwrite`` / ``end``); :func:`build_segments` also cuts
where the next prompt does not extend the previous prompt+completion (``prefix_break``).
"""

from __future__ import annotations

from memgym.trajectory import Segment, Step


def _extends(prefix: list[int], ids: list[int]) -> bool:
    return len(ids) >= len(prefix) and ids[: len(prefix)] == prefix


def build_segments(steps: list[Step]) -> list[Segment]:
    """Cut steps into segments (DCPO): a segment closes at a declared ``segment_end`` or where
    the next prompt does not start with the previous prompt + completion.

    Within a segment the tokens the env inserted between two completions are appended to the
    completion with ``loss_mask`` 0. A trajectory whose steps all extend one prefix gives one
    segment, identical to the unsegmented sample.

    Args:
        steps: Steps with token ids.

    Returns:
        Segments covering all steps in order; the last one ends with ``"end"`` unless the env
        declared another reason.
    """
    segments: list[Segment] = []
    current: Segment | None = None
    masked: list[bool] = []  # whether every step of each segment has its memory mask
    for step in steps:
        has_mask = len(step.memory_mask) == len(step.completion_ids)
        if current is not None:
            context = current.prompt_ids + current.completion_ids
            if _extends(context, step.prompt_ids):
                inserted = step.prompt_ids[len(context):]
                current.completion_ids += inserted + step.completion_ids
                current.loss_mask += [0] * len(inserted) + [1] * len(step.completion_ids)
                current.logprobs += [0.0] * len(inserted) + list(step.logprobs)
                current.memory_mask += [0] * len(inserted) + list(step.memory_mask)
                current.step_end = step.index + 1
                masked[-1] &= has_mask
            else:
                current.end_reason = "prefix_break"
                segments.append(current)
                current = None
        if current is None:
            current = Segment(len(segments), step.index, step.index + 1, list(step.prompt_ids),
                              list(step.completion_ids), [1] * len(step.completion_ids),
                              list(step.logprobs), "end", list(step.memory_mask))
            masked.append(has_mask)
        if step.segment_end is not None:
            current.end_reason = step.segment_end
            segments.append(current)
            current = None
    if current is not None:
        segments.append(current)
    for segment, known in zip(segments, masked, strict=True):
        if not known:
            segment.memory_mask = []
    return segments
