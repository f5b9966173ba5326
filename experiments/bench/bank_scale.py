"""Memory-manager env step cost against bank size, with the bank's BM25 index edited per op.

The env is reset on a whole LoCoMo test conversation, its bank filled with N turns of the other
test conversations, then stepped with scripted ``UPDATE`` actions (round robin over the bank, so
it stays at N entries): each step is one op and one retrieval (the related memories of the next
observation). Three banks, side by side in one run:

* ``incremental``: memgym's :class:`~memgym.memory.MemoryBank`, whose index each op edits;
* ``rebuild``: the index rebuilt over the whole bank at every retrieval (memgym before issue 19);
* ``fts5``: SQLite FTS5 (stdlib ``sqlite3``), rows inserted / updated / deleted per op and
  ranked by ``bm25()`` (a different BM25: k1 = 1.2, its own tokenizer), the engine issue 19
  proposed, for reference.

Targets (issue 19): ``incremental`` step cost at 1,000 entries <= 2x the cost at 10, and >= 5,000
steps/s at 1,000 entries on one core. The answer step (all of the conversation's questions
answered from the bank by the recall answerer) is timed once per bank.

    PYTHONPATH=. python experiments/bench/bank_scale.py --sizes 10 1000
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import time

import gymnasium as gym

import memgym.envs  # noqa: F401  (registers the envs)
from memgym.codecs import Mem0JsonCodec
from memgym.envs.locomo.data import load_locomo
from memgym.memory import MemoryBank, MemoryEntry
from memgym.ops import Add, MemoryOp, OpResult, Update
from memgym.retrieval import BM25Index, tokenize

ENV_ID = "memgym/LoCoMoMemoryManager-v1"


class RebuildBank(MemoryBank):
    """The bank as memgym searched it before: a new index over every entry per search."""

    def search(self, query: str, k: int) -> list[tuple[MemoryEntry, float]]:
        """Build, then search."""
        entries = self.entries()
        return [(entries[i], s) for i, s in BM25Index([e.text for e in entries]).search(query, k)]


class Fts5Bank(MemoryBank):
    """The bank mirrored into an in-memory SQLite FTS5 table, one row per entry."""

    def __init__(self) -> None:
        super().__init__()
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE bank USING fts5(text)")

    def apply(self, op: MemoryOp, step: int, provenance: str = "") -> OpResult:
        """Apply, then mirror the applied op into the table."""
        result = super().apply(op, step, provenance)
        if result.applied and result.id is not None:
            entry = self.get(result.id)
            if entry is None:
                self.db.execute("DELETE FROM bank WHERE rowid = ?", (int(result.id),))
            elif isinstance(op, Add):
                self.db.execute("INSERT INTO bank(rowid, text) VALUES (?, ?)",
                                (int(entry.id), entry.text))
            else:
                self.db.execute("UPDATE bank SET text = ? WHERE rowid = ?",
                                (entry.text, int(entry.id)))
        return result

    def search(self, query: str, k: int) -> list[tuple[MemoryEntry, float]]:
        """FTS5 ``bm25()`` over the query's tokens (OR), best first."""
        terms = " OR ".join(f'"{t}"' for t in dict.fromkeys(tokenize(query)))
        if not terms:
            return []
        rows = self.db.execute("SELECT rowid, rank FROM bank WHERE bank MATCH ? ORDER BY rank "
                               "LIMIT ?", (terms, k)).fetchall()
        return [(self.get(str(rowid)), -rank) for rowid, rank in rows]


BANKS = {"incremental": MemoryBank, "rebuild": RebuildBank, "fts5": Fts5Bank}


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def run(kind: str, size: int, steps: int, filler: list[str]) -> tuple[float, float]:
    """Seconds per step (mean over ``steps``) and of the answer step, for one bank."""
    env = gym.make(ENV_ID, split="test", window=None, conversation=0, max_steps=10_000).unwrapped
    env.reset(seed=0)
    env.bank = BANKS[kind]()
    env.bank.apply_all([Add(text) for text in filler[:size]], step=0)
    codec, items = Mem0JsonCodec(), env.instance.items
    actions = [codec.encode([Update(str(t % size), _clean(f"{i.speaker}: {i.text}"))])
               for t, i in enumerate(items)]
    tick = time.perf_counter()
    for action in actions[:steps]:
        env.step(action)
    per_step = (time.perf_counter() - tick) / steps
    for action in actions[steps:-1]:
        env.step(action)
    tick = time.perf_counter()
    *_, terminated, _, _ = env.step(actions[-1])
    if not terminated:
        raise RuntimeError("the last step did not end the episode")
    return per_step, time.perf_counter() - tick


def main() -> None:
    """Print step cost per bank and size, and the ratio to the smallest size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the fastest counts")
    args = parser.parse_args()
    conversations = load_locomo()
    filler = [_clean(f"{turn.speaker}: {turn.text}") for conv in conversations[3:]
              for turn in conv.turns]
    run("incremental", args.sizes[0], 10, filler)  # warm the tokenizer and scorer caches
    print(f"{'bank':<12} {'entries':>7} {'us/step':>9} {'steps/s':>8} {'x smallest':>10} "
          f"{'answer step (ms)':>16}")
    for kind in BANKS:
        base = None
        for size in args.sizes:
            runs = [run(kind, size, args.steps, filler) for _ in range(args.repeats)]
            per_step, answer = min(r[0] for r in runs), min(r[1] for r in runs)
            base = base or per_step
            print(f"{kind:<12} {size:>7} {per_step * 1e6:>9.1f} {1 / per_step:>8.0f} "
                  f"{per_step / base:>10.2f} {answer * 1e3:>16.1f}")


if __name__ == "__main__":
    main()
