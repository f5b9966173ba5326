import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from memgym import load_trajectories, write_trajectories
from memgym.codecs import Mem0JsonCodec
from memgym.envs import baselines, make_source
from memgym.envs.synthetic import BabiSource, KeyValueSource, Move, Swap, parse_event, parse_fact
from memgym.envs.synthetic.vocab import split_names
from memgym.errors import ConfigError
from memgym.ops import Add, Update
from memgym.replay import replay
from memgym.rollouts import run_episodes

ENV_ID = "memgym/SyntheticMemoryManager-v0"
codec = Mem0JsonCodec()


def _rng(seed):
    return np.random.default_rng(seed)


def _mean_returns(env_kwargs, env_id=ENV_ID, seeds=range(24)):
    return {name: float(np.mean([t.episode_return for t in
                                 run_episodes(env_id, env_kwargs, cls(), seeds, progress=False)]))
            for name, cls in baselines(env_id).items()}


@pytest.mark.parametrize("source", [KeyValueSource(), BabiSource()])
def test_sources_are_seeded_and_unbounded(source):
    assert source.sample(_rng(3)) == source.sample(_rng(3))
    instances = [source.sample(_rng(seed)) for seed in range(40)]
    assert len({i.id for i in instances}) == 40 and len({i.items for i in instances}) == 40
    assert source.num_instances is None
    with pytest.raises(ConfigError, match="unbounded"):
        source.instance(0)
    with pytest.raises(ConfigError, match="unbounded"):
        gym.make(ENV_ID, source=source).reset(seed=0, options={"episode": 0})


def test_kv_text_questions_and_evidence():
    inst = KeyValueSource(num_keys=2, num_updates=4, interference=1,
                          num_questions=1).sample(_rng(0))
    facts = [parse_fact(item.text) for item in inst.items]
    assert [item.id for item in inst.items] == ["f0", "f1", "f2", "f3"]
    # prefix states both keys, then the asked key's last update, then 1 fact on the other key
    (q,) = inst.questions
    asked = facts[2][0]
    assert {facts[0][0], facts[1][0]} == {asked, facts[3][0]} and facts[3][0] != asked
    assert q.question == f"What is {asked}?" and q.answers == (facts[2][1],)
    assert q.evidence == ("f2",)
    assert inst.items[2].text == f"{asked} is now {facts[2][1]}."
    first = next(i for i in range(2) if facts[i][0] == asked)
    assert inst.items[first].text == f"{asked} is {facts[first][1]}."
    assert parse_fact("Mary went to the kitchen.") is None


@pytest.mark.parametrize("knobs", [
    {}, {"interference": 0}, {"num_keys": 12, "num_updates": 40, "interference": 9,
                              "num_questions": 3},
    {"num_keys": 3, "num_updates": 20, "interference": 2, "num_questions": 1},
    {"split": "val", "num_keys": 30, "num_updates": 64, "interference": 5, "num_questions": 6}])
def test_kv_knobs_shape_the_stream_as_documented(knobs):
    source = KeyValueSource(**knobs)
    k = source.interference
    for seed in range(20):
        inst = source.sample(_rng(seed))
        facts = [parse_fact(item.text) for item in inst.items]
        keys = [key for key, _ in facts]
        assert len(inst.items) == source.num_updates and len(set(keys)) == source.num_keys
        assert len(inst.questions) == source.num_questions
        asked = {q.question.removeprefix("What is ").removesuffix("?") for q in inst.questions}
        assert len(asked) == source.num_questions
        for i, q in enumerate(inst.questions):
            key = q.question.removeprefix("What is ").removesuffix("?")
            last = len(keys) - 1 - keys[::-1].index(key)
            # interference=k: exactly k + i facts on other keys after the asked key's last update
            assert q.evidence == (f"f{last}",) and last == source.num_updates - 1 - k - i
            assert q.answers == (facts[last][1],) and keys.count(key) >= 2
        assert not asked & set(keys[len(keys) - k:])
        current = {}
        for key, value in facts:  # a new value never equals a current value of the attribute
            attribute = key.split()[-1]
            assert value not in {v for c, v in current.items() if c.split()[-1] == attribute}
            current[key] = value


def test_babi_evidence_determines_the_answer():
    source = BabiSource(num_entities=5, num_events=30, swap_prob=0.5, num_locations=4,
                        num_questions=5)
    swaps = 0
    for seed in range(30):
        inst = source.sample(_rng(seed))
        events = {item.id: parse_event(item.text) for item in inst.items}
        assert len(events) == 30 and None not in events.values()
        swaps += sum(isinstance(e, Swap) for e in events.values())
        for q in inst.questions:
            who = q.question.removeprefix("Where is ").removesuffix("?")
            where: dict[str, str] = {}
            for eid in q.evidence:  # the evidence alone, from an unknown state, gives the answer
                e = events[eid]
                if isinstance(e, Move):
                    where[e.entity] = e.location
                else:
                    where[e.first], where[e.second] = where.get(e.second), where.get(e.first)
            assert where[who] == q.answers[0]
            mentions = [eid for eid, e in events.items() if who in (
                (e.entity,) if isinstance(e, Move) else (e.first, e.second))]
            assert q.evidence[-1] == mentions[-1] and list(q.evidence) == sorted(
                q.evidence, key=lambda eid: int(eid[1:]))
    assert swaps > 100
    moves_only = BabiSource(swap_prob=0.0).sample(_rng(0))
    assert all(isinstance(parse_event(i.text), Move) for i in moves_only.items)
    assert all(len(q.evidence) == 1 for q in moves_only.questions)
    all_swaps = BabiSource(num_entities=3, swap_prob=1.0).sample(_rng(0))
    assert all(isinstance(parse_event(i.text), Swap) for i in all_swaps.items[3:])


def test_babi_tiny_case_text():
    inst = BabiSource(num_entities=2, num_events=2, num_questions=2).sample(_rng(1))
    (a, b) = (parse_event(i.text) for i in inst.items)
    assert {q.question for q in inst.questions} == {f"Where is {a.entity}?",
                                                     f"Where is {b.entity}?"}
    gold = {q.question: (q.answers, q.evidence) for q in inst.questions}
    assert gold[f"Where is {a.entity}?"] == ((a.location,), ("e0",))
    assert inst.items[0].text.endswith(f" to the {a.location}.")


def test_splits_use_disjoint_people():
    names = {split: set(split_names(split)) for split in ("train", "val", "test")}
    assert [len(n) for n in names.values()] == [42, 6, 12]
    assert not (names["train"] & names["val"] or names["train"] & names["test"]
                or names["val"] & names["test"])
    for split, allowed in names.items():
        for source in (KeyValueSource(split=split), BabiSource(split=split)):
            text = " ".join(i.text for seed in range(10) for i in source.sample(_rng(seed)).items)
            people = {w.split("'")[0] for w in text.split() if w[0].isupper()}
            people -= {"PIN"} | {w for w in people if w.isupper()}
            assert people & (set().union(*names.values()) - allowed) == set()
    assert KeyValueSource(split="val").sample(_rng(0)) != KeyValueSource().sample(_rng(0))


@pytest.mark.parametrize("bad", [
    {"split": "dev"}, {"num_keys": 3, "num_questions": 4}, {"num_questions": 0},
    {"num_keys": 31, "split": "val", "num_updates": 64}, {"interference": -1},
    {"num_keys": 4, "num_questions": 4, "interference": 1}, {"num_updates": 15}])
def test_kv_bad_knobs_are_config_errors(bad):
    with pytest.raises(ConfigError, match=r"expected|must be"):
        make_source("synthetic-kv", **{"split": "train", **bad})


@pytest.mark.parametrize("bad", [
    {"split": "dev"}, {"num_entities": 1}, {"num_entities": 7, "split": "val"},
    {"num_events": 3}, {"swap_prob": 1.5}, {"num_locations": 13}, {"num_questions": 5}])
def test_babi_bad_knobs_are_config_errors(bad):
    with pytest.raises(ConfigError, match="must be"):
        make_source("synthetic-babi", **{"split": "train", **bad})


def test_env_checks_and_observation():
    env = gym.make(ENV_ID)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=5)
    first = env.unwrapped.instance.items[0]
    assert f"New turn: {first.text}\nRelated memories:\n(none)" in obs
    assert info["num_questions"] == 4 and info["turn"]["id"] == "f0"
    assert env.observation_space.contains(obs)
    babi = gym.make(ENV_ID, source="synthetic-babi")
    check_env(babi.unwrapped, skip_render_check=True)


def test_tiny_episode_rewards_by_hand():
    kwargs = {"num_keys": 2, "num_updates": 4, "interference": 1, "num_questions": 1}
    env = gym.make(ENV_ID, **kwargs)
    env.reset(seed=0)
    items = env.unwrapped.instance.items
    (a, _), (b, _) = parse_fact(items[0].text), parse_fact(items[1].text)
    ops = [[Add(f"{a}: {parse_fact(items[0].text)[1]}")],
           [Add(f"{b}: {parse_fact(items[1].text)[1]}")]]
    ops += [[Update("0" if parse_fact(i.text)[0] == a else "1", "{}: {}".format(*parse_fact(
        i.text)))] for i in items[2:]]
    rewards = [env.step(codec.encode(o))[1] for o in ops[:3]]
    obs, reward, term, trunc, info = env.step("garbage")
    assert rewards == [0.0, 0.0, 0.0] and term and not trunc and obs == ""
    assert info["reward_terms"] == {"format": -0.1, "qa": 0.5} and reward == pytest.approx(0.4)
    assert info["segment_end"] == "end" and info["bank_size"] == 2
    # the oracle's memory "Alice's PIN: 4821" vs gold "4821": token F1 = 2 * (1/3) / (4/3)
    (qa,) = info["qa"]
    assert qa["prediction"] == f"{items[2].text.split(' is now ')[0]}: {qa['gold']}"
    # store-all keeps ": Alice's PIN is now 4821." (F1 1/3 vs the gold); with one retrieved
    # memory BM25 ranks the shorter, stale first statement first: stale values cost everything
    store_all = baselines(ENV_ID)["store-all"]()
    (top5,) = run_episodes(ENV_ID, kwargs, store_all, [0], progress=False)
    (top1,) = run_episodes(ENV_ID, {**kwargs, "answer_top_k": 1}, store_all, [0], progress=False)
    assert top5.episode_return == pytest.approx(1 / 3) and top1.episode_return == 0.0


def test_baselines_rank_and_oracle_reaches_its_bound():
    means = _mean_returns({})
    # every question retrieves the latest "<key>: <value>" memory: F1 = 0.5 with one-token values
    assert means["oracle"] == pytest.approx(0.5)
    assert means["oracle"] > means["store-all"] > means["mem0-like"] > means["noop"] == 0.0
    stale = _mean_returns({"answer_top_k": 1, "interference": 8, "num_updates": 28})
    assert stale["oracle"] == pytest.approx(0.5) and stale["store-all"] < 0.05
    babi = _mean_returns({"source": "synthetic-babi", "swap_prob": 0.5})
    assert babi["oracle"] == pytest.approx(2 / 3)  # "Mary: kitchen" vs "kitchen"
    assert babi["oracle"] > max(babi["store-all"], babi["mem0-like"]) > babi["noop"] == 0.0


def test_rollouts_replay_exactly(tmp_path):
    trajs = []
    for cls in baselines(ENV_ID).values():
        trajs += run_episodes(ENV_ID, {"num_updates": 16}, cls(), [0, 1], progress=False)
        trajs += run_episodes(ENV_ID, {"source": "synthetic-babi"}, cls(), [2], progress=False)
    report = replay(load_trajectories(write_trajectories(trajs, tmp_path / "t.parquet")))
    assert report.ok and report.trajectories == 12 and report.steps == 4 * (2 * 16 + 16)


@pytest.mark.parametrize("env_id", ["memgym/LoCoMoMemoryManager-v0", "memgym/MemAlpha-v0",
                                    "memgym/MemAgent-v0"])
@pytest.mark.parametrize("source", ["synthetic-kv", "synthetic-babi"])
def test_synthetic_sources_are_the_stream_of_any_stream_env(env_id, source):
    means = _mean_returns({"source": source}, env_id=env_id, seeds=range(6))
    assert means["oracle"] > means["noop"]
