"""memgym environments; importing this package registers them (and their task sources).

:data:`ENVS` is the registry that ``memgym envs``, ``memgym eval`` and the conformance suite
iterate over: a new env added here gets the whole suite for free.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import import_module

from gymnasium.envs.registration import register

from memgym.envs.babilong import BabilongSource
from memgym.envs.locomo.source import LoCoMoSource
from memgym.envs.longmemeval import LongMemEvalSource
from memgym.envs.memagent.source import HotpotHaystackSource
from memgym.envs.memory_manager import MemoryManagerEnv
from memgym.envs.qa_sources import HotpotQASource, SquadSource
from memgym.envs.sources import SOURCES, make_source, register_source
from memgym.envs.synthetic import BabiSource, KeyValueSource
from memgym.errors import ConfigError


@dataclass(frozen=True)
class EnvEntry:
    """One registered env.

    Attributes:
        entry_point: ``"module:Class"``.
        description: One line for ``memgym envs``.
        baselines: ``"module:ATTR"`` of a dict name → scripted policy class (no-arg
            constructible); it holds at least ``oracle``, ``noop`` and one heuristic.
        kwargs: Default constructor keyword arguments of this id.
    """

    entry_point: str
    description: str
    baselines: str
    kwargs: dict = field(default_factory=dict)


ENVS: dict[str, EnvEntry] = {
    "memgym/LoCoMoMemoryManager-v0": EnvEntry(
        "memgym.envs.memory_manager:MemoryManagerEnv",
        "Memory-R1 memory manager on LoCoMo: ADD/UPDATE/DELETE/NONE per dialogue turn, "
        "rewarded by a frozen answer agent",
        "memgym.envs.memory_manager.baselines:BASELINES", {"source": "locomo"}),
    "memgym/LongMemEvalMemoryManager-v0": EnvEntry(
        "memgym.envs.memory_manager:MemoryManagerEnv",
        "Memory-R1 memory manager on whole LongMemEval chat histories (~530 turns each), "
        "questions per LongMemEval type; the bundled sample unless variant= names the official "
        "files",
        "memgym.envs.memory_manager.baselines:BASELINES",
        # a memory holds a whole stream item (a turn, or a 2,000-character part of a long one)
        {"source": "longmemeval", "split": "test", "max_steps": None,
         "max_memory_chars": 2048}),
    "memgym/Mem1-v0": EnvEntry(
        "memgym.envs.mem1:Mem1Env",
        "MEM1 constant memory: <think> state + <search>/<answer> over BM25 (HotpotQA + NQ), "
        "k-objective questions, reward = sum of EM",
        "memgym.envs.mem1.baselines:BASELINES", {"k": 2}),
    "memgym/MemAgent-v0": EnvEntry(
        "memgym.envs.memagent:MemAgentEnv",
        "MemAgent overwrite reader on HotpotQA in a haystack: rewrite a bounded memory per "
        "chunk, answer in \\boxed{}, rewarded by exact match",
        "memgym.envs.memagent.baselines:BASELINES", {"source": "hotpotqa-haystack"}),
    "memgym/MemAct-v0": EnvEntry(
        "memgym.envs.memact:MemActEnv",
        "MemAct/DCPO context curation on HotpotQA: BM25 search, prune_context by tool-call id "
        "under a token budget, FINAL_ANSWER judged by EM",
        "memgym.envs.memact.baselines:BASELINES", {}),
    "memgym/MemSifter-v0": EnvEntry(
        "memgym.envs.memsifter:MemSifterEnv",
        "MemSifter retrieval as ranking on LoCoMo: rank candidate sessions for a question, "
        "rewarded by the DCG-weighted answer-F1 gain over no memory",
        "memgym.envs.memsifter.baselines:BASELINES"),
    "memgym/MemAlpha-v0": EnvEntry(
        "memgym.envs.mem_alpha:MemAlphaEnv",
        "Mem-α memory construction: core/semantic/episodic tool calls per chunk, rewarded by "
        "a frozen answerer, compression, call success and content validity",
        "memgym.envs.mem_alpha.baselines:BASELINES", {"source": "squad"}),
    "memgym/SyntheticMemoryManager-v0": EnvEntry(
        "memgym.envs.memory_manager:MemoryManagerEnv",
        "Memory-R1 memory manager on synthetic key-value updates with interference (optimal "
        "ops known: ADD a key once, UPDATE it after)",
        "memgym.envs.synthetic.baselines:BASELINES", {"source": "synthetic-kv"}),
    "memgym/ProactiveRetrieval-v0": EnvEntry(
        "memgym.envs.proactive:ProactiveRetrievalEnv",
        "ProactRL proactive retrieval on a key-value task stream: answer from context or "
        "<search> the memory bank at a cost; optional paired-branch process reward",
        "memgym.envs.proactive.baselines:BASELINES", {}),
    "memgym/MemTrain-v0": EnvEntry(
        "memgym.envs.memtrain:MemTrainEnv",
        "MemTrain self-supervised memory: rewrite a bounded memory per SQuAD v2 paragraph, "
        "rewarded by masked-entity probes read from the final and intermediate memories",
        "memgym.envs.memtrain.baselines:BASELINES", {"source": "squad"}),
}

# -v1: strict format rules for reward and instructions without a placeholder to copy
# (``strict=True``), and answerers that score the stored answer span (``answerer="span"``);
# -v0 stays as it was, so its saved trajectories replay.
V1_KWARGS: dict[str, dict] = {
    "memgym/LoCoMoMemoryManager-v0": {"strict": True, "answerer": "span", "timestamps": True},
    "memgym/SyntheticMemoryManager-v0": {"strict": True, "answerer": "span", "timestamps": True},
    "memgym/LongMemEvalMemoryManager-v0": {"strict": True, "answerer": "span",
                                           "timestamps": True},
    "memgym/Mem1-v0": {"strict": True},
    "memgym/MemAgent-v0": {"strict": True},
    "memgym/MemAct-v0": {"strict": True},
    "memgym/MemSifter-v0": {"strict": True, "answerer": "span"},
    "memgym/MemAlpha-v0": {"strict": True, "answerer": "span"},
    "memgym/ProactiveRetrieval-v0": {"strict": True},
    "memgym/MemTrain-v0": {"strict": True},
}
for _env_id, _extra in V1_KWARGS.items():
    _entry = ENVS[_env_id]
    ENVS[_env_id.replace("-v0", "-v1")] = replace(_entry, kwargs={**_entry.kwargs, **_extra})

# -v2 of ProactiveRetrieval: ProactRL's typed experience store (facts, episodes, skills) and the
# task kinds that need it; its actions, observations and rewards differ, so -v1 stays as it was.
ENVS["memgym/ProactiveRetrieval-v2"] = replace(
    ENVS["memgym/ProactiveRetrieval-v1"],
    description="ProactRL proactive retrieval over a typed experience store: answer from "
                "context or <search repo=...> the facts, episodes (earlier tasks) or skills at "
                "a cost; optional paired-branch process reward",
    baselines="memgym.envs.proactive.baselines:TYPED_BASELINES",
    kwargs={**ENVS["memgym/ProactiveRetrieval-v1"].kwargs, "typed_store": True,
            "p_skill": 0.25, "p_recall": 0.25, "max_retrievals": 2})

# -v2 of the LoCoMo manager: which turns a bounded bank keeps (ADD / UPDATE without text store
# the new turn; the observation shows the bank's fill); actions and observations differ from -v1.
ENVS["memgym/LoCoMoMemoryManager-v2"] = replace(
    ENVS["memgym/LoCoMoMemoryManager-v1"],
    description="Memory-R1 memory manager on LoCoMo, choosing turns: ADD / UPDATE store the new "
                "turn as said, NONE skips it; the observation shows the bank's fill",
    baselines="memgym.envs.memory_manager.baselines:KEEP_BASELINES",
    kwargs={**ENVS["memgym/LoCoMoMemoryManager-v1"].kwargs, "keep_turns": True})

# -v3 of the LoCoMo manager: the policy rates each turn's importance and the bank keeps the
# highest-rated turns (v2's task, one decision a turn); actions and observations differ from -v2.
ENVS["memgym/LoCoMoMemoryManager-v3"] = replace(
    ENVS["memgym/LoCoMoMemoryManager-v1"],
    description="Memory-R1 memory manager on LoCoMo, rating turns: {\"importance\": 0-9} per "
                "turn, a bounded bank keeps the highest-rated (Generative Agents' importance)",
    baselines="memgym.envs.memory_manager.baselines:RATE_BASELINES",
    kwargs={**ENVS["memgym/LoCoMoMemoryManager-v1"].kwargs, "rate_turns": True,
            "max_entries": 2})

register_source("locomo", LoCoMoSource)
register_source("longmemeval", LongMemEvalSource)
register_source("hotpotqa-haystack", HotpotHaystackSource)
register_source("squad", SquadSource)
register_source("hotpotqa", HotpotQASource)
register_source("synthetic-kv", KeyValueSource)
register_source("synthetic-babi", BabiSource)
register_source("babilong", BabilongSource)

# MemgymEnv.step enforces the order itself (a typed memgym error before reset and after the end)
for _env_id, _entry in ENVS.items():
    register(id=_env_id, entry_point=_entry.entry_point, kwargs=_entry.kwargs, order_enforce=False)


def baselines(env_id: str) -> dict[str, type]:
    """The scripted baselines of ``env_id`` (name → class).

    Raises:
        ConfigError: ``env_id`` is not a memgym env.
    """
    if env_id not in ENVS:
        raise ConfigError(f"env id must be one of {sorted(ENVS)}, got {env_id!r}")
    module, attr = ENVS[env_id].baselines.split(":")
    return getattr(import_module(module), attr)


__all__ = ["ENVS", "SOURCES", "EnvEntry", "MemoryManagerEnv", "baselines",
           "make_source", "register_source"]
