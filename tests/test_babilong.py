"""The BABILong-style source (envs/babilong.py) on the shared SQuAD v2 / HotpotQA files: the
bAbI story hidden whole and in order in filler of the asked length, evidence chunks that hold
the facts, both stream envs on it, and typed errors."""

import numpy as np
import pytest

from memgym.data import find_data_file
from memgym.envs import baselines
from memgym.envs.babilong import CHARS_PER_TOKEN, BabilongSource, filler_sentences
from memgym.envs.corpora import SQUAD_FILE, load_hotpotqa, load_squad_v2
from memgym.envs.sources import make_source
from memgym.envs.synthetic import BabiSource
from memgym.errors import ConfigError, DataNotFoundError
from memgym.rollouts import run_episodes


@pytest.mark.parametrize("tokens", [1000, 16000])
def test_story_is_hidden_whole_in_filler_of_the_asked_length(tokens):
    source = make_source("babilong", "test", context_tokens=tokens, chunk_chars=1500)
    for seed in range(3):
        instance = source.sample(np.random.default_rng(seed))
        story = BabiSource("test").sample(np.random.default_rng(seed))
        document = " ".join(item.text for item in instance.items)
        assert CHARS_PER_TOKEN * tokens - 400 <= len(document) <= CHARS_PER_TOKEN * tokens
        assert all(len(item.text) <= 1500 for item in instance.items)
        assert len(instance.items) <= source.max_items
        starts = np.cumsum([0] + [len(i.text) + 1 for i in instance.items])  # chunk offsets
        chunk_of, at = {}, 0
        for fact in story.items:  # every fact, whole, in story order
            at = document.index(fact.text, at)
            k = int(np.searchsorted(starts, at, side="right")) - 1
            assert fact.text in instance.items[k].text  # never split across chunks
            chunk_of[fact.id], at = instance.items[k].id, at + len(fact.text)
        for asked, gold in zip(instance.questions, story.questions, strict=True):
            assert (asked.question, asked.answers) == (gold.question, gold.answers)
            assert asked.evidence == tuple(dict.fromkeys(chunk_of[e] for e in gold.evidence))
        filler = len(document) - sum(len(f.text) + 1 for f in story.items)
        assert filler > 0.9 * (len(document) - 100 * len(story.items))  # mostly filler
    again = source.sample(np.random.default_rng(2))
    assert again == instance  # a pure function of the RNG state


@pytest.mark.parametrize(("env_id", "kwargs"), [
    ("memgym/MemAgent-v1", {"max_chunks": 8}),
    ("memgym/LoCoMoMemoryManager-v1", {}),
])
def test_stream_envs_run_on_it_with_oracle_above_noop(env_id, kwargs):
    config = {"source": "babilong", "split": "val", "context_tokens": 2000, **kwargs}
    means = {}
    for name in ("oracle", "noop"):
        trajs = run_episodes(env_id, config, baselines(env_id)[name](), range(4), num_envs=4,
                             progress=False)
        means[name] = np.mean([t.episode_return for t in trajs])
    assert means["oracle"] > 0.5 > means["noop"]


def test_bad_lengths_are_config_errors():
    with pytest.raises(ConfigError, match="context_tokens must be an integer in"):
        BabilongSource(context_tokens=10)
    with pytest.raises(ConfigError, match="context_tokens"):
        BabilongSource(context_tokens=10**7)
    with pytest.raises(ConfigError, match="chunk_chars"):
        BabilongSource(chunk_chars=100)


def test_missing_corpus_is_a_data_not_found_error(tmp_path, monkeypatch):
    find_data_file(SQUAD_FILE)  # present in the shared data
    monkeypatch.setattr("memgym.data.data_dirs", lambda: [tmp_path])
    for loader in (filler_sentences, load_squad_v2, load_hotpotqa):
        loader.cache_clear()
    try:
        with pytest.raises(DataNotFoundError, match=f"{SQUAD_FILE} not found; searched {tmp_path}"):
            make_source("babilong", "train")
    finally:
        for loader in (filler_sentences, load_squad_v2, load_hotpotqa):
            loader.cache_clear()
