import re

import gymnasium as gym
import pytest

from memgym.codecs import Mem0JsonCodec
from memgym.data import find_data_file
from memgym.envs.locomo import load_locomo
from memgym.envs.locomo.source import NAMES, LoCoMoSource
from memgym.errors import ConfigError, DataNotFoundError
from memgym.ops import Add, Delete, Update

from .conftest import ENV_ID

codec = Mem0JsonCodec()


def test_locomo_loader_real_data():
    convs = load_locomo()
    assert len(convs) == 10 and convs[0].sample_id == "conv-26"
    assert sum(len(c.turns) for c in convs) == 5882
    q = convs[0].qa[0]
    assert q.answer == "7 May 2023" and convs[0].turns[q.evidence[0]].dia_id == "D1:3"


def _rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    trace = [obs]
    for action in actions:
        obs, reward, term, trunc, info = env.step(action)
        trace.append((obs, reward, term, trunc, info["op_results"], info["reward_terms"]))
        if term or trunc:
            break
    return trace


def test_same_seed_same_actions_same_outcome():
    actions = [codec.encode([Add("Caroline went to a support group")]), "garbage",
               codec.encode([Update("0", "Caroline went to an LGBTQ support group"),
                             Delete("5")]), codec.encode([])] * 3
    a = _rollout(gym.make(ENV_ID, window=5), 7, actions)
    b = _rollout(gym.make(ENV_ID, window=5), 7, actions)
    assert a == b and len(a) == 6 and a[-1][2] is True
    assert a[2][5]["format"] == -0.1  # "garbage" is penalized
    assert _rollout(gym.make(ENV_ID, window=5), 8, actions)[0] != a[0]


def test_episode_scores_window_questions_with_recall_answerer():
    env = gym.make(ENV_ID, window=4)
    _, info = env.reset(seed=3)
    assert info["num_questions"] >= 1
    turns = env.unwrapped.instance.items
    total = 0.0
    for turn in turns:
        _, reward, term, _, info = env.step(codec.encode([Add(f"{turn.speaker}: {turn.text}")]))
        total += reward
    assert term and info["bank_size"] == len(turns)
    assert total == pytest.approx(sum(q["score"] for q in info["qa"]) / len(info["qa"]))
    assert 0.0 <= total <= 1.0


def test_bad_config_and_missing_data_are_typed_errors(tmp_path):
    with pytest.raises(ConfigError, match="split"):
        gym.make(ENV_ID, split="dev")
    with pytest.raises(ConfigError, match="does not exist"):
        load_locomo(str(tmp_path / "nope.json"))
    with pytest.raises(DataNotFoundError, match="MEMGYM_DATA_DIR"):
        find_data_file("locomo/not_a_file.json")


def test_splits_are_disjoint_conversations_and_train_wide_is_all_but_val():
    def conversations(split):
        source = gym.make(ENV_ID, split=split).unwrapped.source
        return {source.instance(i).id.split(":")[0] for i in range(source.num_instances)}

    assert conversations("train") == {"conv-26"} and conversations("val") == {"conv-30"}
    assert len(conversations("test")) == 8
    wide = conversations("train-wide")  # every conversation but val's
    assert wide == conversations("train") | conversations("test") and "conv-30" not in wide


def test_renamed_speakers_are_renamed_everywhere_and_nothing_else_changes():
    plain = LoCoMoSource("train", window=6)
    renamed = LoCoMoSource("train", window=6, rename_speakers=True)
    assert renamed.num_instances == plain.num_instances
    speakers = set()
    for i in range(plain.num_instances):
        a, b = plain.instance(i), renamed.instance(i)
        assert a.id == b.id and [t.id for t in a.items] == [t.id for t in b.items]
        text_b = " ".join([t.text for t in b.items] + [q.question for q in b.questions]
                          + [x for q in b.questions for x in q.answers])
        assert re.search(r"\b(Caroline|Melanie)\b", text_b) is None
        assert {t.speaker for t in b.items} <= set(NAMES)
        speakers |= {t.speaker for t in b.items}
        for x, y in zip(a.items, b.items, strict=True):  # names are the only change
            assert re.sub(r"\b(Caroline|Melanie)\b", "N", x.text) == re.sub(
                r"\b(" + "|".join(NAMES) + r")\b", "N", y.text)
        assert [q.evidence for q in a.questions] == [q.evidence for q in b.questions]
    assert len(speakers) > 20  # the point of it: many names
    assert LoCoMoSource("train", window=6, rename_speakers=True).instance(7) == renamed.instance(7)
    env = gym.make("memgym/LoCoMoMemoryManager-v1", split="train", window=6,
                   rename_speakers=True).unwrapped
    obs, _ = env.reset(seed=3)
    assert "Caroline" not in obs and "Melanie" not in obs
