"""``memgym/ProactiveRetrieval-v0`` (issue 21 item 1): the task stream, the baselines' order,
the retrieval budget and the paired-branch process reward (the conformance suite covers the
rest)."""

import gymnasium as gym
import numpy as np
import pytest

from memgym import load_trajectories, write_trajectories
from memgym.envs import baselines
from memgym.envs.proactive import build_tasks
from memgym.envs.synthetic import KeyValueSource, parse_fact
from memgym.errors import ConfigError
from memgym.replay import replay
from memgym.rollouts import run_episodes

ENV_ID = "memgym/ProactiveRetrieval-v1"
TYPED = "memgym/ProactiveRetrieval-v2"
SEEDS = range(16)
COST = 0.1  # the default retrieval_cost


def _make(**kwargs):
    return gym.make(ENV_ID, **kwargs).unwrapped


def test_tasks_ask_the_current_value_and_hide_it_or_show_a_stale_one():
    items = KeyValueSource("train", num_keys=8, num_updates=24, interference=0,
                           num_questions=1).sample(np.random.default_rng(5)).items
    facts = {item.id: parse_fact(item.text) for item in items}
    kinds = set()
    for seed in range(20):
        for task in build_tasks(items, np.random.default_rng(seed), 6, 3, 0.5, 0.5):
            key = task.question.removeprefix("What is ").removesuffix("?")
            before = [i.id for i in items[:task.position] if facts[i.id][0] == key]
            assert task.evidence == before[-1] and facts[task.evidence] == (key, task.answer)
            assert len(task.context) <= 3 and set(task.context) <= {
                i.id for i in items[:task.position]}
            own = [i for i in task.context if facts[i][0] == key]
            if not task.needs_retrieval:
                assert own[-1] == task.evidence
            elif task.stale:
                assert own and all(facts[i][1] != task.answer for i in own)
            else:
                assert own == []
            kinds.add((task.needs_retrieval, task.stale))
    assert kinds == {(False, False), (True, True), (True, False)}


def test_oracle_beats_the_best_heuristic_beats_never_retrieve():
    runs = {name: run_episodes(ENV_ID, {}, cls(), SEEDS, progress=False)
            for name, cls in baselines(ENV_ID).items()}
    means = {name: float(np.mean([t.episode_return for t in r])) for name, r in runs.items()}
    assert list(means) == ["oracle", "always-retrieve", "retrieve-if-absent", "noop"]
    best = max(means["always-retrieve"], means["retrieve-if-absent"])
    assert means["oracle"] > best > means["retrieve-if-absent"] > means["noop"] > 0, means
    env = _make()
    for seed, oracle, noop in zip(SEEDS, runs["oracle"], runs["noop"], strict=True):
        assert oracle.seed == noop.seed == seed
        env.reset(seed=seed)
        needed = sum(task.needs_retrieval for task in env.tasks)
        # every answer right; one retrieval per task whose context lacks the evidence
        assert oracle.episode_return == pytest.approx(6 - COST * needed)
        # never-retrieve is right exactly on the tasks whose context holds the evidence
        assert noop.episode_return == 6 - needed
        assert all(s.parse_error is None for s in oracle.steps + noop.steps)


def test_the_retrieval_budget_and_an_unanswered_task():
    env = _make(max_retrievals=1)
    _, info = env.reset(seed=3)
    search = f"<search>{info['question']}</search>"
    _, reward, _, _, info = env.step(search)
    assert reward == -COST and info["retrievals_left"] == 0 and info["task"] == 0
    obs, reward, _, _, info = env.step(search)  # refused, free; the task's steps are spent
    assert info["op_results"][0]["applied"] is False
    assert info["op_results"][0]["reason"] == "no retrievals left for this task"
    assert reward == 0.0 and info["ended_task"] == 0 and info["prediction"] is None
    assert info["task"] == 1 and obs.count("Task 2 of 6.") == 1
    with pytest.raises(ConfigError, match="process_reward"):
        _make(process_reward="yes")
    for kwargs, match in (({"num_tasks": 0}, "num_tasks"), ({"p_stale": 1.5}, "p_stale"),
                          ({"retrieval_cost": -1}, "retrieval_cost"),
                          ({"num_tasks": 30}, "num_updates")):
        with pytest.raises(ConfigError, match=match):
            _make(**kwargs)


def _return(env, policy, obs, info, first=None):
    """Return from the env's current state to the episode's end: ``first`` (if given) then
    ``policy``."""
    total, done = 0.0, False
    while not done:
        action = first if first is not None else policy.act([obs], [info])[0].text
        first = None
        obs, reward, terminated, truncated, info = env.step(action)
        total, done = total + reward, terminated or truncated
    return total


@pytest.mark.parametrize(("env_id", "name"), [(ENV_ID, "always-retrieve"),
                                              (TYPED, "route-by-question")])
def test_the_paired_reward_of_a_retrieval_is_the_return_difference_of_its_two_forks(env_id, name):
    """At every retrieval of a heuristic, fork a plain env (no process reward) from the same
    state: one fork retrieves, the other does not, both continue with never-retrieve (the
    env's continuation, the context reader) to the episode's end (on -v2 the forks also write
    different episode records)."""
    policy, reader = baselines(env_id)[name](), baselines(env_id)["noop"]()
    credits = []
    for seed in range(8):
        paired = gym.make(env_id, process_reward="paired").unwrapped
        plain = gym.make(env_id).unwrapped
        obs, info = paired.reset(seed=seed)
        assert plain.reset(seed=seed) == (obs, info)
        done = False
        while not done:
            action = policy.act([obs], [info])[0].text
            if info["retrievals_left"] > 0 and action.startswith("<search"):
                snap = plain.snapshot()
                with_ = _return(plain, reader, obs, info, first=action)
                plain.restore(snap)
                without = _return(plain, reader, obs, info)
                plain.restore(snap)
            else:
                with_ = without = None
            obs, reward, done, _, info = paired.step(action)
            plain_obs, plain_reward, _, _, plain_info = plain.step(action)
            terms = dict(info["reward_terms"])
            credit = terms.pop("paired")
            assert (obs, terms) == (plain_obs, plain_info["reward_terms"])
            assert reward == pytest.approx(plain_reward + credit)
            if with_ is None:
                assert credit == 0.0 and "paired" not in info
            else:
                assert credit == pytest.approx(with_ - without, abs=1e-12)
                credits.append(round(credit, 9))
    # the evidence in context: the retrieval only costs; stale or absent: it pays
    assert set(credits) == {-COST, 1 - COST}


@pytest.mark.parametrize(("env_id", "name"), [(ENV_ID, "retrieve-if-absent"),
                                              (TYPED, "route-by-question")])
def test_paired_trajectories_replay(tmp_path, env_id, name):
    trajs = run_episodes(env_id, {"process_reward": "paired"}, baselines(env_id)[name](),
                         range(3), progress=False)
    assert any(s.reward_terms["paired"] != 0 for t in trajs for s in t.steps)
    report = replay(load_trajectories(write_trajectories(trajs, tmp_path / "p.parquet")))
    assert report.ok and report.trajectories == 3
