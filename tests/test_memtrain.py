import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from memgym import load_trajectories, write_trajectories
from memgym.codecs.memagent import MemoryRewriteCodec
from memgym.envs import baselines
from memgym.envs.memagent.env import NO_MEMORY
from memgym.envs.memtrain.cloze import MASK, entities, probes, read, sentences, windows
from memgym.envs.memtrain.env import MemTrainEnv
from memgym.envs.sources import FiniteSource, StreamItem, TaskInstance
from memgym.errors import ConfigError
from memgym.ops import Overwrite
from memgym.replay import replay
from memgym.rollouts import run_episodes

ID = "memgym/MemTrain-v0"
CHUNKS = ("Marie Curie was born in Warsaw and studied physics at the Flying University in secret.",
          "In 1891 she moved to Paris to study mathematics at the Sorbonne.",
          "The couple shared the Nobel Prize in Physics in 1903 with Henri Becquerel.")
TINY = TaskInstance("tiny", tuple(StreamItem(f"p{k}", t) for k, t in enumerate(CHUNKS)), ())
ENTITY_LIST = ("Marie Curie Warsaw Flying University 1891 Paris Sorbonne Nobel Prize Physics 1903 "
               "Henri Becquerel")
_CODEC = MemoryRewriteCodec()


def tiny(**kwargs):
    env = MemTrainEnv(source=FiniteSource([TINY]), probes=6, recall_probes=1, **kwargs)
    obs, info = env.reset(seed=0, options={"episode": 0})
    return env, obs, info


def _write(text):
    return _CODEC.encode([Overwrite(text)])


def test_check_env_and_registry():
    env = gym.make(ID)
    check_env(env.unwrapped, skip_render_check=True)
    assert set(baselines(ID)) == {"oracle", "entity-dense", "keep-latest", "noop"}
    assert env.unwrapped.max_steps == 32 and not env.unwrapped.strict
    assert gym.make("memgym/MemTrain-v1").unwrapped.strict


def test_entity_rule():
    text = ("In March 3, 1867, Marie Curie moved to the University of Paris with 2,000 francs and "
            "45% of the 10th prize. He met the King of Spain in June 1800 and 4 July 1801.")
    found = [s[a:b] for s in sentences(text) for a, b in entities(s)]
    assert found == ["March 3, 1867", "Marie Curie", "University of Paris", "2,000", "45%",
                     "10th", "King of Spain", "June 1800", "4 July 1801"]
    assert sentences("One. Two\nthree. 4 four") == ["One.", "Two", "three.", "4 four"]


def test_probes_mask_one_entity_of_a_sentence_with_context():
    assert [(p.text, p.answer) for p in probes(0, CHUNKS[0])] == [
        (f"{MASK} was born in Warsaw and studied physics at the Flying University in secret.",
         "Marie Curie"),
        (f"Marie Curie was born in {MASK} and studied physics at the Flying University in "
         "secret.", "Warsaw"),
        (f"Marie Curie was born in Warsaw and studied physics at the {MASK} in secret.",
         "Flying University")]
    repeated = "Paris lies in Paris, a city by a river of France."
    assert [p.answer for p in probes(0, repeated)] == ["France"]  # Paris: in its own context
    assert probes(0, "She married Pierre Curie in 1895.") == []  # one plain word of context


def test_the_reader_needs_the_entity_next_to_its_context_words():
    probe = probes(0, CHUNKS[0])[1]  # Warsaw
    assert read(probe, windows(CHUNKS[0])) == ("warsaw", 1.0)
    assert read(probe, windows("Curie: born in Warsaw, studied physics")) == ("warsaw", 1.0)
    for memory in (ENTITY_LIST, NO_MEMORY, MASK, probe.text, "Updated memory:",
                   "Warsaw.\n" + CHUNKS[0].replace("Warsaw", "Paris"),
                   "born, studied physics in secret\nWarsaw"):  # stored, not near its context
        assert read(probe, windows(memory))[1] == 0.0, memory
    assert read(probes(0, CHUNKS[2])[0], windows(CHUNKS[2].replace("Nobel ", "")), "f1")[1] == (
        pytest.approx(2 / 3))


def test_rewards_are_recall_then_end_to_end_with_their_weights():
    env, obs, info = tiny()
    assert MASK not in obs and info["recall_steps"] == [0, 1]
    memory, returns = [], []
    for k, chunk in enumerate(CHUNKS):
        assert [p["chunk"] <= k for p in info["privileged"]["needed"]] == [True] * len(
            info["privileged"]["needed"])
        memory.append(chunk)
        _, reward, term, _, info = env.step(_write("\n".join(memory)))
        assert reward == sum(info["reward_terms"].values())
        objectives = [p["objective"] for p in info["probes"]]
        assert objectives == (["recall"] if k < 2 else ["e2e"] * 3)
        assert all(p["score"] == 1.0 for p in info["probes"])
        returns.append(info["reward_terms"])
        assert term == (k == 2)
    assert returns == [{"e2e": 0.0, "recall": 0.25, "format": 0.0}] * 2 + [
        {"e2e": 1.0, "recall": 0.0, "format": 0.0}]


def test_format_errors_and_the_budget():
    env, _, _ = tiny(max_memory_tokens=8)
    _, reward, _, _, info = env.step("Updated memory:   ")  # empty: kept, penalized
    assert info["parse_error"]["reason"] == "empty memory" and env.memory == NO_MEMORY
    assert reward == pytest.approx(-0.1)
    _, reward, _, _, info = env.step(_write(CHUNKS[1] + " " + CHUNKS[0]))
    assert env.memory == "In 1891 she moved to Paris to study"  # cut to 8 words, then read
    assert info["reward_terms"]["format"] == -0.1 and "cut to 8" in info["op_results"][0]["reason"]
    strict, obs, _ = tiny(strict=True)
    copied = "Rewrite the memory: keep what you still need of it"
    assert copied in obs
    assert "copies the instructions" in strict.step(_write(copied))[4]["parse_error"]["reason"]


def test_probes_are_drawn_per_seed_in_distinct_sentences():
    env = gym.make(ID).unwrapped
    draws = []
    for seed in range(4):
        env.reset(seed=seed)
        assert 0 < len(env.e2e) <= 6 and len({p.sentence for p in env.e2e}) == len(env.e2e)
        assert all(p.chunk <= t for t, ps in env.recall.items() for p in ps)
        draws.append(env.e2e)
    env.reset(seed=0)
    assert env.e2e == draws[0] and len(set(draws)) == 4


def test_bad_config_is_a_typed_error():
    for kwargs, match in (({"metric": "bleu"}, "metric"), ({"split": "dev"}, "split"),
                          ({"probes": 0}, "probes"), ({"max_memory_tokens": 0}, "max_memory")):
        with pytest.raises(ConfigError, match=match):
            gym.make(ID, **kwargs)


def test_baselines_rank_on_fixed_seeds_and_replay_exactly(tmp_path):
    """oracle > best heuristic > noop (= 0) on seeds 0..31; the trajectories replay."""
    means, trajs = {}, []
    for name, cls in baselines(ID).items():
        runs = run_episodes(ID, {}, cls(), range(32), progress=False)
        means[name] = sum(t.episode_return for t in runs) / len(runs)
        assert all(s.parse_error is None for t in runs for s in t.steps), name
        trajs += runs[:2]
    best = max(means["entity-dense"], means["keep-latest"])
    assert 1.5 >= means["oracle"] > best + 0.3 and best > means["noop"] + 0.3
    assert means["noop"] == 0.0
    report = replay(load_trajectories(write_trajectories(trajs, tmp_path / "t.parquet")))
    assert report.ok and report.trajectories == 8


def test_v1_baselines_pass_the_strict_rules_and_score_as_in_v0():
    for name, cls in baselines(ID).items():
        old = run_episodes(ID, {}, cls(), range(3), progress=False)
        new = run_episodes("memgym/MemTrain-v1", {}, cls(), range(3), progress=False)
        pairs = [(a, b) for s, t in zip(old, new, strict=True)
                 for a, b in zip(s.steps, t.steps, strict=True)]
        assert pairs and all(a.action == b.action and b.parse_error is None
                             and a.reward_terms == b.reward_terms for a, b in pairs), name
