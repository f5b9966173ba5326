"""``memgym/MemAct-v0``: MemAct / DCPO context curation on HotpotQA (or NQ-Open) questions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from memgym.codecs import CutAction
from memgym.codecs.memact import MemActCodec
from memgym.context import Message, WorkingContext, count_tokens
from memgym.envs.base import MemgymEnv, clean, step_info, text_space
from memgym.envs.memact.pool import split_pool
from memgym.errors import ConfigError
from memgym.ops import Answer, EditContext, OpResult, Retrieve
from memgym.scoring import exact_match, token_f1
from memgym.surrogates import first_surrogate

INSTRUCTIONS = """\
You answer {task} by searching a collection of Wikipedia paragraphs.
Reply with exactly one of:
- search calls (at most {max_calls}), each returning the top paragraphs (topk at most {max_topk}):
<tool_call>{{"name": "search", "arguments": {{"query": "<keywords>", "topk": 3}}}}</tool_call>
- one context edit, which deletes the tool results with the given ids (and your calls that \
produced them); write what you still need into memory, it stays in the context:
<tool_call>{{"name": "prune_context", "arguments": {{"memory": "<key facts so far>", \
"delete_ids": ["<id>"]}}}}</tool_call>
- the final answer, a few words:
FINAL_ANSWER: <answer>
Each tool result starts with <|tool id=ID|>; ID is the 8-character id to delete it by.
The context may hold at most {max_context_tokens} tokens; beyond that the episode fails."""
# strict (-v1): no placeholder to copy; queries, memory and answer must be the policy's own
INSTRUCTIONS_V1 = """\
You answer {task} by searching a collection of Wikipedia paragraphs.
Reply with exactly one of the following, and write nothing after it:
- search calls (at most {max_calls}), each a <tool_call> block holding a JSON object whose \
"name" is "search" and whose "arguments" give "query" (search keywords of your own) and \
"topk" (how many paragraphs come back, an integer of at most {max_topk});
- one context edit, a single <tool_call> block whose "name" is "prune_context" and whose \
"arguments" give "memory" (the key facts you still need, in your own words: they stay in the \
context) and "delete_ids" (a list of the ids of the tool results to delete; your calls that \
produced them go too);
- the final answer: one line that starts with FINAL_ANSWER: and goes on with a few words, in \
a message without tool calls.
Each tool result starts with a header line that shows its 8-character id after "id="; delete \
the result by that id.
The context may hold at most {max_context_tokens} tokens; beyond that the episode fails."""
CUE = "<|assistant|>\n"  # the generation cue: the header of the next assistant message
_MAX_REPLY_CHARS = 300  # cap on the text of error / confirmation tool messages
_JUDGES = {"em": exact_match, "f1": token_f1}
_TASKS = {"hotpotqa": "a multi-hop question", "nq": "a question"}  # the instructions' first line


class MemActEnv(MemgymEnv):
    """MemAct (Memory as Action) with DCPO segments: answer a multi-hop question by searching
    and pruning one's own working context under a token budget.

    An episode is one HotpotQA question (split of the 500 dev questions by
    :func:`memgym.envs.sources.split_range`), or with ``dataset="nq"`` one NQ-Open question
    (of 2,655, single-hop, several gold aliases). ``search`` runs BM25 over a pool of
    paragraphs: the question's own (HotpotQA: 2 gold + 8 distractors; NQ: its gold passage)
    plus paragraphs of other questions of the split up to ``pool_size``, drawn at reset. Every
    tool call gets an 8-character id drawn from the env RNG; ``prune_context`` deletes tool
    results by id (an assistant message whose calls are all deleted goes too) and keeps its
    ``memory`` in the context as part of the call.

    ## Action Space
    ``Text(max_length=max_action_chars)``: one assistant message, parsed by
    :class:`memgym.codecs.memact.MemActCodec`: Hermes ``<tool_call>`` search calls, one
    ``prune_context`` call, or ``FINAL_ANSWER: <answer>``. Longer text is cut to
    ``max_action_chars``. Text that does not parse applies no op and is penalized.

    ## Observation Space
    ``Text`` over :data:`memgym.envs.base.CHARSET`. The env's ``context_mode`` is ``"append"``:
    ``info["chat"]`` holds the working context as chat messages (:meth:`WorkingContext.chat`:
    system instructions, the question as the user message, each assistant message verbatim and
    each tool result as a ``tool`` message that starts with its ``<|tool id=ID|>`` line), which
    an LLM policy renders with its own chat template, so between two edits each prompt extends
    the previous prompt + completion token for token. The observation is the same context as
    text (for logs and replay): the rendered working context (system
    instructions, ``Question: ...``, then each assistant message and tool result as
    ``<|role|>`` / ``<|tool id=ID|>`` blocks, see :class:`memgym.context.Message`) followed by
    the cue ``<|assistant|>\\n``. Between two edits, observation t+1 is observation t + the
    action + ``\\n`` + the tool results + the cue, so the prompts share a growing prefix.

    ## Rewards
    ``answer``: on the step that answers, 1.0 if the judge accepts the answer for some gold alias
    (``judge="em"``: normalized exact match; ``"f1"``: token F1 >= ``f1_threshold``), else 0.
    Binary, once per episode: DCPO gives this same trajectory reward to every segment.
    ``format``: ``-format_penalty`` on a step whose action does not parse (in strict mode
    also: a completion cut at ``max_new_tokens``, text after the last tool call or the answer
    line, a query, memory or answer copied from the instructions; see
    :meth:`~memgym.envs.base.MemgymEnv.parse`) or whose op is rejected (empty search query,
    ``prune_context`` with an id not in the context: the prune is then applied to nothing),
    else 0. The step reward is their sum.

    ## Starting State
    The system instructions and the question; a freshly drawn paragraph pool.

    ## Episode End
    Terminates when the agent answers, or with answer reward 0 when the context exceeds
    ``max_context_tokens`` after a step (overflow is a failure state of the task, not a time
    limit, so it terminates). Truncates after ``max_steps`` steps without an answer. A step
    after the end raises :class:`memgym.errors.ResetNeeded` (as in every memgym env).

    ## Info
    ``ops``, ``op_results`` (``id``: the tool-call id given to the call), ``parse_error``,
    ``reward_terms``, ``segment_end`` (``"edit"`` when an applied prune removed messages,
    since the next prompt no longer extends the previous one; else ``"end"`` on the last step,
    else None), ``question``, ``instance``, ``context_tokens`` (of the rendered context, see
    :func:`memgym.context.count_tokens`), ``peak_context_tokens``, ``num_prunes`` (applied
    prunes), ``messages`` (the context as :meth:`Message.to_dict` dicts), on the last step
    ``end_reason`` (``answer``, ``context_overflow``, ``max_steps``), ``prediction`` and
    ``correct``; ``chat`` (see Observation Space; not recorded in trajectory files: it follows
    from ``messages``); ``privileged`` holds ``answers`` (gold aliases) and ``supporting_titles``.

    ## Arguments
    ``split`` (``train`` / ``val`` / ``test``), ``pool_size`` (paragraphs per episode, >= 10;
    None: the whole split), ``max_context_tokens``, ``max_steps``, ``max_topk`` (larger topk is
    clamped to it, smaller than 1 to 1), ``default_topk``, ``max_calls`` (tool calls per
    message), ``max_result_chars`` (a paragraph is cut to this many chars in a result),
    ``judge`` (``"em"`` or ``"f1"``), ``f1_threshold``, ``format_penalty``,
    ``max_action_chars``, ``strict`` (strict format rules and instructions without a
    placeholder to copy), ``dataset`` (``"hotpotqa"`` or ``"nq"``; the instructions' first
    line says "a multi-hop question" or "a question").

    ## Version History
    * v1: ``strict=True``: text after the last tool call or the answer line, a cut completion
      and a query, memory or answer copied from the instructions are format errors; the
      instructions describe the calls in words, without placeholder content. ``dataset``
      added later (its default ``"hotpotqa"`` changes nothing: saved trajectories replay).
    * v0: initial version; ``info["chat"]`` and ``context_mode`` added later (observations,
      rewards and recorded ``info`` unchanged: saved v0 trajectories still replay).
    """

    state_attrs = ("question_index", "pool", "context", "used_ids", "t", "num_prunes",
                   "peak_tokens", "outcome")
    context_mode = "append"

    def __init__(self, split: str = "train", pool_size: int | None = 200,
                 max_context_tokens: int = 2048, max_steps: int = 16, max_topk: int = 5,
                 default_topk: int = 3, max_calls: int = 4, max_result_chars: int = 2000,
                 judge: str = "em", f1_threshold: float = 0.8, format_penalty: float = 0.1,
                 max_action_chars: int = 2000, strict: bool = False,
                 dataset: str = "hotpotqa") -> None:
        for name, value in (("max_steps", max_steps), ("max_topk", max_topk),
                            ("default_topk", default_topk), ("max_calls", max_calls),
                            ("max_result_chars", max_result_chars),
                            ("max_action_chars", max_action_chars)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if pool_size is not None and (not isinstance(pool_size, int) or pool_size < 10):
            raise ConfigError(f"pool_size must be None or an int >= 10, got {pool_size!r}")
        if judge not in _JUDGES:
            raise ConfigError(f"judge must be one of {sorted(_JUDGES)}, got {judge!r}")
        if not isinstance(f1_threshold, int | float) or not 0.0 < f1_threshold <= 1.0:
            raise ConfigError(f"f1_threshold must be in (0, 1], got {f1_threshold!r}")
        if dataset not in _TASKS:
            raise ConfigError(f"dataset must be one of {sorted(_TASKS)}, got {dataset!r}")
        self.strict = strict
        template = INSTRUCTIONS_V1 if strict else INSTRUCTIONS
        self.instructions = template.format(task=_TASKS[dataset], max_calls=max_calls,
                                            max_topk=max_topk,
                                            max_context_tokens=max_context_tokens)
        least = count_tokens(self.instructions) + 256
        if not isinstance(max_context_tokens, int) or max_context_tokens < least:
            raise ConfigError(f"max_context_tokens must be an int >= {least} (instructions + "
                              f"256), got {max_context_tokens!r}")
        self.pool_data = split_pool(split, dataset)
        self.pool_size, self.max_context_tokens = pool_size, max_context_tokens
        self.max_steps, self.max_topk, self.max_calls = max_steps, max_topk, max_calls
        self.max_result_chars, self.max_action_chars = max_result_chars, max_action_chars
        self.judge, self.threshold = _JUDGES[judge], (1.0 if judge == "em" else f1_threshold)
        self.format_penalty = format_penalty
        self.codec = MemActCodec(default_topk=default_topk, max_calls=max_calls)
        # An observation is the context (<= 4 chars per budget token before the last step)
        # plus the last step's assistant message and tool replies, plus the cue.
        reply = max(_MAX_REPLY_CHARS, max_topk * (max_result_chars + 128))
        longest = (4 * max_context_tokens + max_action_chars + max_calls * (reply + 64)
                   + 4 * len(CUE))
        self.observation_space = text_space(longest)
        self.action_space = text_space(max_action_chars)

    # ----------------------------------------------------------------- episode state helpers
    def _new_id(self) -> str:
        """A fresh 8-hex-char tool-call id from the env RNG, unique within the episode."""
        while True:
            call_id = f"{int(self.np_random.integers(1 << 32)):08x}"
            if call_id not in self.used_ids:
                self.used_ids.add(call_id)
                return call_id

    def _observation(self) -> str:
        return clean(self.context.render() + CUE)

    def _info(self) -> dict[str, Any]:
        q = self.pool_data.questions[self.question_index]
        supporting = [p.title for p in q.paragraphs if p.supporting]
        return {"question": q.question, "instance": q.id,
                "context_tokens": self.context.count_tokens(),
                "peak_context_tokens": self.peak_tokens, "num_prunes": self.num_prunes,
                "messages": [m.to_dict() for m in self.context.messages],
                "chat": self.context.chat(),
                "privileged": {"answers": list(q.answers), "supporting_titles": supporting}}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode. ``options={"episode": i}`` picks question ``i`` of the split
        instead of a seeded draw (the pool and tool-call ids still come from the seed).

        Raises:
            ConfigError: ``options["episode"]`` is not an index of the split.
        """
        super().reset(seed=seed)
        n = len(self.pool_data.questions)
        index = (options or {}).get("episode")
        if index is None:
            index = int(self.np_random.integers(n))
        elif isinstance(index, bool) or not isinstance(index, int | np.integer) or not (
                0 <= index < n):
            raise ConfigError(f"options['episode'] must be an int in [0, {n}), got {index!r}")
        self.question_index = int(index)
        own = self.pool_data.own[self.question_index]
        if self.pool_size is None:
            self.pool = frozenset(range(len(self.pool_data)))
        else:
            others = np.setdiff1d(np.arange(len(self.pool_data)), own)
            size = min(max(self.pool_size - len(own), 0), len(others))
            extra = self.np_random.choice(others, size=size, replace=False)
            self.pool = frozenset(own) | frozenset(int(i) for i in extra)
        question = self.pool_data.questions[self.question_index].question
        self.context = WorkingContext([Message("system", self.instructions),
                                       Message("user", clean(f"Question: {question}"))])
        self.used_ids: set[str] = set()
        self.t, self.num_prunes = 0, 0
        self.peak_tokens = self.context.count_tokens()
        self.outcome: tuple[bool, bool] | None = None
        return self._observation(), self._info()

    # ------------------------------------------------------------------------------ tools
    def _search(self, op: Retrieve, call_id: str) -> tuple[OpResult, str]:
        if not op.query.strip():
            return OpResult(op, False, call_id, "empty query"), "Error: empty query."
        k = min(max(op.k, 1), self.max_topk)
        hits = self.pool_data.search(op.query, k, self.pool)
        lines = [f"[{rank}] {self.pool_data.titles[i][:100]}\n"
                 f"{self.pool_data.texts[i][:self.max_result_chars]}"
                 for rank, i in enumerate(hits, 1)]
        return OpResult(op, True, call_id), "\n".join(lines) or "No results."

    def _prune(self, op: EditContext, call_id: str) -> tuple[OpResult, str, bool]:
        before = len(self.context)
        result = replace(self.context.apply(op), id=call_id)
        if not result.applied:
            return result, f"Error: {result.reason}. Nothing was pruned."[:_MAX_REPLY_CHARS], False
        self.num_prunes += 1
        removed = before - len(self.context)
        return result, f"Pruned {removed} messages; your memory is kept above.", removed > 0

    def _answer(self, op: Answer) -> tuple[OpResult, float]:
        golds = self.pool_data.questions[self.question_index].answers
        return OpResult(op, True), float(max(self.judge(op.text, g) for g in golds)
                                         >= self.threshold)

    # ------------------------------------------------------------------------------- step
    def _step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Apply one assistant message (see the class docstring)."""
        terms = {"answer": 0.0, "format": 0.0}
        raw = action[:self.max_action_chars]
        text = clean(raw)  # what the context shows; the codec sees the raw text when it is not
        decoded = raw if first_surrogate(raw) >= 0 else text  # valid Unicode
        if isinstance(action, CutAction):  # slicing and clean() give a plain str
            decoded = CutAction(decoded)
        parsed = self.parse(self.codec, decoded, self.instructions)
        results: list[OpResult] = []
        edited = answered = False
        extra: dict[str, Any] = {}
        if parsed.error is not None:
            call_id = self._new_id()
            self.context.append(Message("assistant", text, tool_call_ids=(call_id,)))
            reply = f"Error: could not parse your message: {parsed.error.reason}"
            self.context.append(Message("tool", reply[:_MAX_REPLY_CHARS], call_id))
        elif isinstance(parsed.ops[0], Answer):
            result, terms["answer"] = self._answer(parsed.ops[0])
            results.append(result)
            self.context.append(Message("assistant", text))
            answered = True
            extra = {"prediction": parsed.ops[0].text, "correct": terms["answer"] == 1.0}
        elif isinstance(parsed.ops[0], EditContext):
            call_id = self._new_id()
            result, reply, edited = self._prune(parsed.ops[0], call_id)
            results.append(result)
            self.context.append(Message("assistant", text, tool_call_ids=(call_id,)))
            self.context.append(Message("tool", reply, call_id))
        else:
            ids = tuple(self._new_id() for _ in parsed.ops)
            self.context.append(Message("assistant", text, tool_call_ids=ids))
            for op, call_id in zip(parsed.ops, ids, strict=True):
                result, reply = self._search(op, call_id)  # type: ignore[arg-type]
                results.append(result)
                self.context.append(Message("tool", reply, call_id))
        if parsed.error is not None or not all(r.applied for r in results):
            terms["format"] = -self.format_penalty
        self.t += 1
        tokens = self.context.count_tokens()
        self.peak_tokens = max(self.peak_tokens, tokens)
        overflow = not answered and tokens > self.max_context_tokens
        terminated = answered or overflow
        truncated = not terminated and self.t >= self.max_steps
        if terminated or truncated:
            self.outcome = (terminated, truncated)
            reason = "answer" if answered else "context_overflow" if overflow else "max_steps"
            extra = {"prediction": "", "correct": False, **extra, "end_reason": reason}
        segment_end = "edit" if edited else "end" if self.outcome else None
        info = step_info(parsed, results, terms, segment_end, **self._info(), **extra)
        return self._observation(), float(sum(terms.values())), terminated, truncated, info
