"""What every memgym env shares: text spaces, the standard ``info`` keys, snapshot/restore.

Every env subclasses :class:`MemgymEnv` and

* uses :func:`text_space` for its observation and action spaces (one broad charset, so
  gymnasium's ``Text`` checks are cheap and observations of any corpus fit after :func:`clean`);
* returns :func:`step_info` from ``step`` (``ops``, ``op_results``, ``parse_error``,
  ``reward_terms``, ``segment_end``; the runner records exactly these);
* lists its episode-state attributes in ``state_attrs`` so :meth:`MemgymEnv.snapshot` /
  :meth:`MemgymEnv.restore` can fork an episode exactly;
* sets ``max_steps``, the declared limit within which every episode terminates or truncates;
* declares its ``context_mode``: ``"rebuild"`` (the default) when every observation is a fresh
  prompt (the policy sends it as one user message; every step declares a ``segment_end``), or
  ``"append"`` when the context grows turn by turn: then ``info["chat"]`` (from ``reset`` and
  every ``step``) holds the context as chat messages (``role`` ``system`` / ``user`` /
  ``assistant`` / ``tool``, ``content``), the assistant messages being the actions verbatim, so
  the policy renders them with its model's chat template and consecutive prompts extend each
  other token for token until the env edits the context and declares it (``segment_end``);
* may put gold data for oracle baselines under ``info["privileged"]`` (never in the
  observation: a learned policy never sees it);
* parses actions with :meth:`MemgymEnv.parse`, which applies the strict format rules of the
  ``-v1`` ids (``strict=True``); a :class:`~memgym.codecs.base.CutAction` (a completion cut
  at ``max_new_tokens``) is recorded as ``info["cut"]`` by :meth:`MemgymEnv.step`, so replay
  passes the same action;
* calls ``super().reset(seed=seed)`` first in ``reset`` and implements :meth:`MemgymEnv._step`;
  the base's ``step`` refuses what is a caller's bug, not a bad action text: a non-``str``
  action (:class:`~memgym.errors.ActionTypeError`), a step before the first ``reset()`` or after
  the episode ended (:class:`~memgym.errors.ResetNeeded`, also Gymnasium's ``ResetNeeded``;
  the envs are registered without Gymnasium's ``OrderEnforcing``, which this replaces).
"""

from __future__ import annotations

import copy
import functools
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
from gymnasium import spaces

from memgym.codecs import Codec, CutAction, ParseResult, strict_result
from memgym.errors import ActionTypeError, ResetNeeded
from memgym.ops import OpResult, op_to_dict


def _charset() -> str:
    # Letters, marks, digits, punctuation, symbols, spaces and format characters (e.g. the
    # zero-width joiner of emoji sequences) of the BMP plus the emoji planes (U+1F000-U+1FAFF):
    # ~60k chars, cheap for gymnasium's Text (a full-Unicode charset costs 2 s and 0.7 GB).
    codepoints = [*range(0x20, 0xD800), *range(0xE000, 0xFFFE), *range(0x1F000, 0x1FB00)]
    chars = {chr(c) for c in codepoints
             if unicodedata.category(chr(c))[0] in "LMNPS"
             or unicodedata.category(chr(c)) in ("Zs", "Cf")}
    return "".join(sorted(chars | set(string.whitespace)))


CHARSET = _charset()
_CHARSET = frozenset(CHARSET)


def clean(text: str) -> str:
    """``text`` with every character outside :data:`CHARSET` replaced by ``?``."""
    if _CHARSET.issuperset(text):  # the common case, checked in C
        return text
    return "".join(ch if ch in _CHARSET else "?" for ch in text)


@functools.cache
def _text_space() -> spaces.Text:
    return spaces.Text(max_length=1, min_length=0, charset=CHARSET)


def text_space(max_length: int) -> spaces.Text:
    """A ``Text`` space over :data:`CHARSET` of at most ``max_length`` characters that admits
    the empty string.

    A shallow copy of one cached space with its public ``max_length`` set: the charset tables
    (built in ~40 ms) are shared by every space of the process and never mutated, while each
    copy seeds and samples with its own RNG.
    """
    space = copy.copy(_text_space())
    space.max_length = int(max_length)
    return space


def step_info(parsed: ParseResult, results: Sequence[OpResult], terms: dict[str, float],
              segment_end: str | None, **extra: Any) -> dict[str, Any]:
    """The standard ``info`` of a step.

    Args:
        parsed: The codec's parse of the action (``parse_error`` is its error, or None).
        results: What applying each parsed op did.
        terms: Named reward terms; the step reward is their sum.
        segment_end: Why a training segment ends after this step (``edit``, ``overwrite``,
            ``end``) or None when the next prompt extends this one.
        **extra: Env-specific keys.

    Returns:
        ``{"ops", "op_results", "parse_error", "reward_terms", "segment_end", "op_spans",
        **extra}``; ``op_spans`` lists the ``[start, end)`` character spans of the action's
        memory-op payloads (``parsed.spans``), for memory-token credit.
    """
    return {"ops": [op_to_dict(op) for op in parsed.ops],
            "op_results": [r.to_dict() for r in results],
            "parse_error": parsed.error.to_dict() if parsed.error else None,
            "reward_terms": dict(terms), "segment_end": segment_end,
            "op_spans": [list(span) for span in parsed.spans], **extra}


@dataclass(frozen=True)
class EnvSnapshot:
    """Opaque episode state of a :class:`MemgymEnv` (deep copies; restoring does not alias)."""

    state: dict[str, Any]
    rng_state: dict[str, Any] | None


class MemgymEnv(gym.Env[str, str]):
    """Base of memgym's text envs (see the module docstring for the contract)."""

    metadata: ClassVar[dict] = {"render_modes": []}
    state_attrs: ClassVar[tuple[str, ...]] = ()
    context_mode: ClassVar[str] = "rebuild"
    max_steps: int
    strict: bool = False  # strict format rules for reward (``-v1`` ids); see :meth:`parse`
    _steps_taken: int | None = None  # steps of the current episode; None before the first reset
    _ended = False  # the last step terminated or truncated the episode

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Seed the RNG (Gymnasium's ``reset``) and start a new episode's step count.

        Subclasses call ``super().reset(seed=seed)`` first, then build the episode and return
        ``(observation, info)``.
        """
        super().reset(seed=seed, options=options)  # returns nothing: subclasses return
        self._steps_taken, self._ended = 0, False

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Check the call, then apply ``action`` (:meth:`_step`).

        Args:
            action: The policy's action text. Any ``str`` is valid input: text the env's codec
                cannot parse (or that is not valid Unicode) is a parse error in ``info``,
                penalized.

        Returns:
            ``(observation, reward, terminated, truncated, info)`` as :meth:`_step` gives them.

        Raises:
            ActionTypeError: ``action`` is not a ``str``.
            ResetNeeded: ``reset()`` was never called, or the episode has ended.
        """
        if not isinstance(action, str):
            raise ActionTypeError(f"{type(self).__name__}.step takes the action text as a str, "
                                  f"got {type(action).__name__}")
        if self._steps_taken is None:
            raise ResetNeeded(f"{type(self).__name__}.step() called before reset(); call "
                              "reset() first")
        if self._ended:
            raise ResetNeeded(f"the episode ended at step {self._steps_taken}; call reset() to "
                              "start a new one")
        result = self._step(action)
        if isinstance(action, CutAction):  # recorded, so replay passes the same action
            result[4]["cut"] = True
        self._steps_taken += 1
        self._ended = bool(result[2] or result[3])
        return result

    def parse(self, codec: Codec, action: str, instructions: str) -> ParseResult:
        """``codec.decode(action)``; in strict mode (``self.strict``) under
        :func:`~memgym.codecs.base.strict_result`: a :class:`~memgym.codecs.base.CutAction`,
        text after the action and op text copied from ``instructions`` are format errors."""
        parsed = codec.decode(action)
        if not self.strict:
            return parsed
        return strict_result(parsed, action, cut=isinstance(action, CutAction),
                             instructions=instructions)

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Apply one action of a running episode (the env's own ``step``; :meth:`step` checked
        the call)."""
        raise NotImplementedError

    def snapshot(self) -> EnvSnapshot:
        """The current episode state, to :meth:`restore` later (fork, replay)."""
        state = {name: copy.deepcopy(getattr(self, name))
                 for name in ("_steps_taken", "_ended", *self.state_attrs)
                 if hasattr(self, name)}
        rng = self._np_random.bit_generator.state if self._np_random is not None else None
        return EnvSnapshot(state, copy.deepcopy(rng))

    def restore(self, snap: EnvSnapshot) -> None:
        """Put the env back in the state of ``snap``; the episode continues identically."""
        for name, value in snap.state.items():
            setattr(self, name, copy.deepcopy(value))
        if snap.rng_state is not None:
            self.np_random.bit_generator.state = copy.deepcopy(snap.rng_state)
