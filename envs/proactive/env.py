"""``memgym/ProactiveRetrieval-v0``: decide *when* (and, ``-v2``, *where*) to retrieve from memory
(ProactRL).

ProactRL ("Ask Only When Needed: Proactive Retrieval from Memory and Skills for
Experience-Driven Lifelong Agents") trains a policy to retrieve only when its context does not
suffice, crediting each retrieval decision with a paired-branch process reward: the episode is
continued from the same prefix with and without the retrieval and the decision earns the
difference. This env is that decision on a task stream (:mod:`memgym.envs.proactive.tasks`),
optionally over ProactRL's typed experience store (:mod:`memgym.envs.proactive.store`).
"""

from __future__ import annotations

from typing import Any

from memgym.codecs import XmlTagsCodec
from memgym.envs.base import MemgymEnv, clean, step_info, text_space
from memgym.envs.proactive.reader import answer_from_context
from memgym.envs.proactive.store import REPOSITORIES, ExperienceStore, episode_text
from memgym.envs.proactive.tasks import Task, build_tasks
from memgym.envs.synthetic import KeyValueSource
from memgym.errors import ConfigError
from memgym.ops import Answer, MemorySearch, OpResult, Retrieve
from memgym.scoring import exact_match

PROCESS_REWARDS = ("none", "paired")
_FACT_LINE_CHARS = 96  # "[f<i>] <owner>'s <attribute> is now <value>." with the longest words
_ITEM_LINE_CHARS = 224  # an episode record quoting a 40-char answer, the longest item line

INSTRUCTIONS = (
    "Answer a stream of questions about facts that change over time. Each fact is tagged with "
    "its position in the stream, as in [f12]: a higher position is more recent, and a later "
    "fact about the same thing replaces an earlier one. Your context holds a few earlier facts; "
    "a memory bank holds every fact read so far. For each question, either answer from your "
    "context, with the answer between <answer> and </answer>, or first retrieve from the memory "
    "bank, with a query of your own between <search> and </search>: the best-matching facts are "
    "added to your context. A retrieval costs {cost} reward and a question allows {limit}. "
    "Write nothing after the closing tag."
)
TYPED_INSTRUCTIONS = (
    "Answer a stream of tasks. Each fact is tagged with its position in the stream, as in "
    "[f12]: a higher position is more recent, and a later fact about the same thing replaces "
    "an earlier one. Your context holds a few earlier facts. An experience store holds three "
    "repositories: facts (every fact read so far), episodes (a record of each earlier task, "
    "as in [e2] for task 2: its question, correct answer and the answer you gave) and skills "
    "(procedures, as in [s1], that derive a quantity from a fact). For each task, either "
    "answer from your context, with the answer between <answer> and </answer>, or first "
    "retrieve from one repository, with a query of your own between <search repo=\"facts\">, "
    "<search repo=\"episodes\"> or <search repo=\"skills\"> and </search>: the best-matching "
    "items are added to your context. A retrieval costs {cost} reward and a task allows "
    "{limit}. Write nothing after the closing tag."
)


class ProactiveRetrievalEnv(MemgymEnv):
    """Answer each task of a stream from context, or pay to retrieve from the memory bank first.

    An episode is a ``synthetic-kv`` stream of ``num_updates`` facts about ``num_keys`` keys
    (values change over time) and ``num_tasks`` tasks posed along it
    (:func:`~memgym.envs.proactive.tasks.build_tasks`). Before task ``j`` the stream items up to
    its position are read into a :class:`~memgym.memory.MemoryBank` (one entry per fact, with its
    stream id as provenance: the experience store built from the earlier part of the stream).
    The task shows a question and a few earlier facts as context: the key's latest fact with
    probability ``p_in_context``, else possibly a stale one (``p_stale``), which only a retrieval
    can expose. Each step the policy either answers from its context or retrieves: the bank's
    BM25 top ``top_k`` facts for its query are added to the context and the task is shown again.

    With ``typed_store=True`` (``-v2``) the bank is ProactRL's experience store of typed
    repositories (:class:`~memgym.envs.proactive.store.ExperienceStore`): ``facts`` (the bank
    above), ``episodes`` (a record of each ended task, written when it ends: question, correct
    answer, the answer given and its outcome) and ``skills`` (procedures deriving a quantity from
    a fact). A retrieval names its repository, and besides fact tasks the stream poses ``skill``
    tasks (a derived quantity: needs the skill and the key's latest fact, probability
    ``p_skill``) and ``recall`` tasks (an earlier task's answer: needs its episode record,
    probability ``p_recall``); see :mod:`memgym.envs.proactive.tasks`.

    ## Action Space
    ``Text(max_length=max_action_chars)``, parsed by :class:`memgym.codecs.XmlTagsCodec`:
    ``<search>query</search>`` (a :class:`~memgym.ops.Retrieve`) or ``<answer>text</answer>``
    (an :class:`~memgym.ops.Answer`), optionally after a ``<think>`` block (scratch: applied,
    not kept). Text that does not parse applies no op, is penalized and uses one of the task's
    steps. A search beyond ``max_retrievals`` for the task is rejected (``op_results``), free.
    With ``typed_store``: ``<search repo="facts|episodes|skills">query</search>`` (a
    :class:`~memgym.ops.MemorySearch`); a ``<search>`` naming no repository, or another, does
    not parse.

    ## Observation Space
    ``Text`` over :data:`memgym.envs.base.CHARSET`: the instructions, ``Task j of T. Retrievals
    left for this task: n.``, ``Question: What is <owner>'s <attribute>?``, ``Context:`` and its
    fact lines ``[f<i>] <fact>`` in stream order, then after a retrieval ``Retrieved:`` and the
    retrieved fact lines (best first; ``nothing matched`` when none did). ``""`` after the end.
    With ``typed_store`` the retrieved lines are items of any repository (``[e<j>] Task j
    asked: ...``, ``[s<k>] Skill <name>: ...``), and questions may be ``What is <owner>'s
    <quantity>?`` or ``What was the correct answer to task <j>, which asked: <question>``.

    ## Rewards
    ``success``: on the step that answers a task, the exact match (SQuAD normalization) of the
    answer with the key's current value, in {0, 1}. ``retrieval``: ``-retrieval_cost`` on a step
    whose retrieval was applied. ``format``: ``-format_penalty`` on a step whose action does not
    parse (strict mode: also a cut completion, text after the closing tag, text copied from the
    instructions). With ``process_reward="paired"`` also ``paired`` (0 on other steps): on a
    retrieval step, ``G_with - G_without``, the returns to the end of the current task of two
    forks of the episode from the state before the step (:meth:`~memgym.envs.base.MemgymEnv.
    snapshot` / ``restore``), one taking the retrieval, the other answering at once, both then
    continued by the fixed context reader (:func:`~memgym.envs.proactive.reader.
    answer_from_context`: answers from what its context shows, never retrieves). Later tasks
    do not depend on the decision under the continuation (the tasks and their contexts are
    drawn at reset; the episode records hold the answers, but the continuation never
    retrieves), so the difference equals that of the forks' full-episode returns. The reader is
    the continuation because it is fixed (the credit depends on the state and the action only,
    so it replays exactly), reads no gold data (a retrieval that exposes a stale fact earns
    ``1 - retrieval_cost``, one that adds nothing ``-retrieval_cost``; with the typed store a
    retrieval in a skill task earns ``1 - retrieval_cost`` only if the other item it needs is
    already shown), and never retrieves (the forks differ in this one decision). ProactRL
    continues with the policy itself; a sampled continuation would make the credit a random
    variable. The step reward is the sum of the terms.

    ## Starting State
    The first task, its context, no retrieval; the bank holds the stream up to the task.

    ## Episode End
    A task ends when it is answered or after ``max_retrievals + 1`` steps (then unanswered,
    ``success`` 0). The episode terminates when the last task ends; it never truncates.
    ``max_steps == num_tasks * (max_retrievals + 1)``.

    ## Info
    ``ops``, ``op_results``, ``parse_error``, ``reward_terms``, ``segment_end`` (``"overwrite"``
    each step: the prompt is rebuilt; ``"end"`` on the last); for the task shown next (absent
    after the end): ``task`` (0-based), ``num_tasks``, ``question``, ``retrievals`` (taken for
    it), ``retrievals_left`` and ``privileged`` (``answer``, ``evidence`` (stream id),
    ``in_context`` (the evidence is in the context or was retrieved), ``stale``; with
    ``typed_store`` also ``kind`` and ``search``: ``[repository, query]`` of each needed item not
    yet shown, ``in_context`` meaning none is left) for the oracle.
    A step that ends a task adds ``ended_task`` and ``prediction`` (``None`` when unanswered);
    a paired retrieval step adds ``paired`` (``{"with": G_with, "without": G_without}``).

    ## Arguments
    ``split`` (names of the ``synthetic-kv`` split), ``num_keys``, ``num_updates`` (stream
    length), ``num_tasks``, ``context_items`` (facts in each task's context), ``p_in_context``,
    ``p_stale``, ``top_k`` (facts per retrieval), ``max_retrievals`` (per task),
    ``retrieval_cost``, ``format_penalty``, ``process_reward`` (``"none"`` or ``"paired"``),
    ``max_action_chars``, ``strict``, ``typed_store``, ``p_skill``, ``p_recall`` (need
    ``typed_store``; ``p_skill + p_recall <= 1``). Raises :class:`~memgym.errors.ConfigError` on
    a value out of range (or ``num_tasks > num_updates``, an unknown ``process_reward`` or
    split).

    ## Version History
    * v2: ``typed_store=True`` (facts, episodes, skills), ``p_skill=0.25``, ``p_recall=0.25``,
      ``max_retrievals=2``, strict (new instructions, actions and task kinds).
    * v1: ``strict=True`` (strict format rules; same instructions: they show no placeholder).
    * v0: initial version.
    """

    state_attrs = ("items", "tasks", "store", "task_index", "read", "retrieved", "retrievals",
                   "task_steps", "done")

    def __init__(self, split: str = "train", num_keys: int = 8, num_updates: int = 24,
                 num_tasks: int = 6, context_items: int = 3, p_in_context: float = 0.5,
                 p_stale: float = 0.5, top_k: int = 5, max_retrievals: int = 1,
                 retrieval_cost: float = 0.1, format_penalty: float = 0.1,
                 process_reward: str = "none", max_action_chars: int = 1024,
                 strict: bool = False, typed_store: bool = False, p_skill: float = 0.0,
                 p_recall: float = 0.0) -> None:
        for name, value, lo in (("num_tasks", num_tasks, 1), ("context_items", context_items, 1),
                                ("top_k", top_k, 1), ("max_retrievals", max_retrievals, 0),
                                ("max_action_chars", max_action_chars, 1)):
            if not isinstance(value, int) or value < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
        for name, value in (("p_in_context", p_in_context), ("p_stale", p_stale),
                            ("p_skill", p_skill), ("p_recall", p_recall)):
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        if p_skill + p_recall > 1:
            raise ConfigError(f"p_skill + p_recall must be <= 1, got {p_skill + p_recall}")
        if (p_skill or p_recall) and not typed_store:
            raise ConfigError(f"p_skill and p_recall need typed_store=True, got p_skill="
                              f"{p_skill!r}, p_recall={p_recall!r}")
        for name, value in (("retrieval_cost", retrieval_cost),
                            ("format_penalty", format_penalty)):
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if process_reward not in PROCESS_REWARDS:
            raise ConfigError(f"process_reward must be one of {PROCESS_REWARDS}, "
                              f"got {process_reward!r}")
        if num_tasks > num_updates:
            raise ConfigError(f"num_tasks must be <= num_updates ({num_updates}), "
                              f"got {num_tasks}")
        self.source = KeyValueSource(split, num_keys=num_keys, num_updates=num_updates,
                                     interference=0, num_questions=1)
        self.num_tasks, self.context_items = num_tasks, context_items
        self.p_in_context, self.p_stale = float(p_in_context), float(p_stale)
        self.max_retrievals, self.retrieval_cost = max_retrievals, float(retrieval_cost)
        self.format_penalty, self.process_reward = float(format_penalty), process_reward
        self.strict, self.typed_store = strict, bool(typed_store)
        self.p_skill, self.p_recall = float(p_skill), float(p_recall)
        self.repositories = REPOSITORIES if typed_store else ("facts",)
        self.max_steps = num_tasks * (max_retrievals + 1)
        self.instructions = (TYPED_INSTRUCTIONS if typed_store else INSTRUCTIONS).format(
            cost=retrieval_cost,
            limit=f"{max_retrievals} retrieval{'s' if max_retrievals != 1 else ''}")
        self.codec = XmlTagsCodec(top_k=top_k,
                                  repositories=self.repositories if typed_store else ())
        lines = context_items + max_retrievals * top_k + 2
        self.observation_space = text_space(len(self.instructions) + 256 + lines * (
            _ITEM_LINE_CHARS if typed_store else _FACT_LINE_CHARS))
        self.action_space = text_space(max_action_chars)

    # ------------------------------------------------------------------------------ state
    @property
    def task(self) -> Task:
        """The task being played."""
        return self.tasks[self.task_index]

    def _start_task(self) -> None:
        """Read the stream up to the current task into the bank; clear the task's retrievals."""
        for i in range(self.read, self.task.position):
            self.store.add("facts", self.items[i].id, self.items[i].text, step=i)
        self.read = self.task.position
        self.retrieved, self.retrievals, self.task_steps = None, 0, 0

    def _observation(self) -> str:
        task = self.task
        lines = [self.instructions,
                 f"Task {self.task_index + 1} of {self.num_tasks}. Retrievals left for this "
                 f"task: {self.max_retrievals - self.retrievals}.",
                 f"Question: {task.question}", "Context:",
                 *(self.store.line(i) for i in task.context)]
        if self.retrieved is not None:
            lines += ["Retrieved:", *(self.store.line(i) for i in self.retrieved)]
            if not self.retrieved:
                lines.append("nothing matched")
        return clean("\n".join(lines))

    def _info(self) -> dict[str, Any]:
        if self.done:
            return {}
        task = self.task
        shown = {*task.context, *(self.retrieved or ())}
        privileged = {"answer": task.answer, "evidence": task.evidence,
                      "in_context": task.evidence in shown, "stale": task.stale}
        if self.typed_store:
            missing = [[repo, query] for repo, item, query in task.sources if item not in shown]
            privileged.update(in_context=not missing, kind=task.kind, search=missing)
        return {"task": self.task_index, "num_tasks": self.num_tasks, "question": task.question,
                "retrievals": self.retrievals,
                "retrievals_left": self.max_retrievals - self.retrievals,
                "privileged": privileged}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode on a fresh stream and task list drawn from the env's RNG."""
        super().reset(seed=seed)
        self.items = self.source.sample(self.np_random).items
        self.tasks = build_tasks(self.items, self.np_random, self.num_tasks, self.context_items,
                                 self.p_in_context, self.p_stale, self.p_skill, self.p_recall)
        self.store = ExperienceStore(self.repositories)
        self.read, self.task_index, self.done = 0, 0, False
        self._start_task()
        return self._observation(), self._info()

    # ------------------------------------------------------------------------------ steps
    def _apply(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """One step without process reward (see the class docs)."""
        parsed = self.parse(self.codec, action, self.instructions)
        terms = {"success": 0.0, "retrieval": 0.0,
                 "format": 0.0 if parsed.ok else -self.format_penalty}
        results, prediction, answered = [], None, False
        self.task_steps += 1
        for op in parsed.ops:
            if isinstance(op, Retrieve | MemorySearch):
                if self.retrievals >= self.max_retrievals:
                    results.append(OpResult(op, False, None, "no retrievals left for this task"))
                    continue
                hits = self.store.search(getattr(op, "memory_type", "facts"), op.query, op.k)
                self.retrieved = [*(self.retrieved or ()),
                                  *(h for h in hits if h not in (self.retrieved or ()))]
                self.retrievals += 1
                terms["retrieval"] = -self.retrieval_cost
            elif isinstance(op, Answer):
                prediction, answered = op.text, True
                terms["success"] = exact_match(op.text, self.task.answer)
            results.append(OpResult(op, True))
        extra: dict[str, Any] = {}
        if answered or self.task_steps > self.max_retrievals:
            extra = {"ended_task": self.task_index, "prediction": prediction}
            if self.typed_store:
                self.store.add("episodes", f"e{self.task_index + 1}", episode_text(
                    self.task_index + 1, self.task.question, self.task.answer, prediction,
                    terms["success"] == 1.0), step=self.task_index)
            self.task_index += 1
            self.done = self.task_index == self.num_tasks
            if not self.done:
                self._start_task()
        observation = "" if self.done else self._observation()
        info = step_info(parsed, results, terms, "end" if self.done else "overwrite",
                         **self._info(), **extra)
        return observation, float(sum(terms.values())), self.done, False, info

    def continuation(self) -> str:
        """The fixed continuation policy's action in the current state: answer from context
        (:func:`~memgym.envs.proactive.reader.answer_from_context`)."""
        return self.codec.encode([Answer(answer_from_context(self._observation()))])

    def _task_return(self, action: str) -> float:
        """Return from now to the end of the current task: ``action``, then the continuation."""
        index, total = self.task_index, 0.0
        while True:
            _, reward, terminated, _, _ = self._apply(action)
            total += reward
            if terminated or self.task_index != index:
                return total
            action = self.continuation()

    def _retrieves(self, action: str) -> bool:
        """Whether ``action`` parses to an applicable retrieval."""
        parsed = self.parse(self.codec, action, self.instructions)
        return (self.retrievals < self.max_retrievals
                and any(isinstance(op, Retrieve | MemorySearch) for op in parsed.ops))

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Apply one action; with ``process_reward="paired"`` a retrieval step is first forked
        (see the class docs)."""
        if self.process_reward == "none":
            return self._apply(action)
        paired = None
        if self._retrieves(action):
            snap = self.snapshot()
            without = self._task_return(self.continuation())
            self.restore(snap)
            with_ = self._task_return(action)
            self.restore(snap)
            paired = {"with": with_, "without": without}
        observation, _, terminated, truncated, info = self._apply(action)
        info["reward_terms"]["paired"] = paired["with"] - paired["without"] if paired else 0.0
        if paired:
            info["paired"] = paired
        return (observation, float(sum(info["reward_terms"].values())), terminated, truncated,
                info)
