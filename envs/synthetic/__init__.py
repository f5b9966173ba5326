"""Synthetic task sources: seeded, unbounded, with difficulty knobs and a known optimal policy.

* :class:`KeyValueSource` (``synthetic-kv``): key-value facts with repeated updates and
  interference.
* :class:`BabiSource` (``synthetic-babi``): bAbI-like location tracking with moves and swaps.

Any stream env takes them by name (``source="synthetic-kv"``); ``memgym/SyntheticMemoryManager-v0``
is the memory manager on ``synthetic-kv`` with an oracle that executes the optimal op sequence.
"""

from memgym.envs.synthetic.babi import BabiSource, Move, Swap, parse_event
from memgym.envs.synthetic.kv import KeyValueSource, fact_text, parse_fact

__all__ = ["BabiSource", "KeyValueSource", "Move", "Swap", "fact_text", "parse_event",
           "parse_fact"]
