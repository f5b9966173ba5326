"""``memgym/ProactiveRetrieval-v2`` (issue 21 item 1): ProactRL's typed experience store (facts,
episodes, skills), the typed ``<search repo=...>`` action, the task kinds that need each
repository and the baselines' order (``tests/test_proactive.py`` checks the paired reward and
replay of -v2 too; the conformance suite covers the rest)."""

import gymnasium as gym
import numpy as np
import pytest

from memgym.codecs import XmlTagsCodec, strict_result
from memgym.envs import baselines
from memgym.envs.proactive import build_tasks
from memgym.envs.proactive.store import REPOSITORIES, SKILLS
from memgym.envs.synthetic import KeyValueSource, parse_fact
from memgym.envs.synthetic.kv import ATTRIBUTES
from memgym.errors import ConfigError
from memgym.ops import MemorySearch, Retrieve
from memgym.rollouts import run_episodes
from memgym.scoring import normalize_answer

ENV_ID = "memgym/ProactiveRetrieval-v2"
SEEDS = range(16)
COST = 0.1


def _make(**kwargs):
    return gym.make(ENV_ID, **kwargs).unwrapped


def test_a_typed_search_names_one_repository():
    codec = XmlTagsCodec(top_k=5, repositories=REPOSITORIES)
    for text, repo in (('<search repo="episodes">Alice PIN</search>', "episodes"),
                       ("<SEARCH Repo='Skills'>Alice PIN</search>", "skills"),
                       ("<think>t</think><search repo=facts> Alice PIN", "facts")):
        parsed = codec.decode(text)
        assert parsed.ok and parsed.ops[-1] == MemorySearch(repo, "Alice PIN", 5), text
    assert _make().strict  # -v2 keeps -v1's strict rules
    canonical = codec.encode([MemorySearch("skills", "floor", 5)])
    assert canonical == '<search repo="skills">floor</search>'
    assert codec.decode(canonical).ops == (MemorySearch("skills", "floor", 5),)
    strict = strict_result(codec.decode(canonical + " more"), canonical + " more")
    assert strict.error.reason == "text after the action: 'more'"
    for text, tag in (("<search>x</search>", "<search>"),
                      ('<search repo="notes">x</search>', '<search repo="notes">'),
                      ('<search kind="facts">x</search>', '<search kind="facts">')):
        parsed = codec.decode(text)
        assert parsed.ops == () and parsed.error.position == 0
        assert parsed.error.reason == ('expected <search repo="..."> with repo one of facts, '
                                       f"episodes, skills, got {tag!r}")
    # the plain codec (-v0/-v1) is unchanged: a typed tag is no action there
    plain = XmlTagsCodec(top_k=5)
    assert plain.decode("<search>x</search>").ops == (Retrieve("x", 5),)
    assert plain.decode('<search repo="facts">x</search>').error.reason == (
        "expected <search> or <answer>, found neither")


def test_every_skill_derives_an_answer_the_value_itself_does_not_match():
    assert sorted(s.attribute for s in SKILLS.values()) == sorted(ATTRIBUTES)
    for skill in SKILLS.values():
        for value in ATTRIBUTES[skill.attribute]:
            derived = normalize_answer(skill.apply(value))
            assert derived and derived != normalize_answer(value), (skill.name, value)


def test_skill_and_recall_tasks_need_their_repository():
    items = KeyValueSource("train", num_keys=8, num_updates=24, interference=0,
                           num_questions=1).sample(np.random.default_rng(5)).items
    facts = {item.id: parse_fact(item.text) for item in items}
    kinds = {}
    for seed in range(20):
        tasks = build_tasks(items, np.random.default_rng(seed), 6, 3, 0.5, 0.5, 0.3, 0.3)
        assert tasks[0].kind != "recall"
        for j, task in enumerate(tasks):
            kinds[task.kind] = kinds.get(task.kind, 0) + 1
            repos = [repo for repo, _, _ in task.sources]
            assert task.evidence in [item for _, item, _ in task.sources]
            if task.kind == "skill":
                owner, quantity = task.question.removeprefix("What is ").removesuffix(
                    "?").split("'s ")
                skill = SKILLS[quantity]
                key, value = facts[task.evidence]
                assert key == f"{owner}'s {skill.attribute}" and repos == ["skills", "facts"]
                assert task.answer == skill.apply(value) != value and task.needs_retrieval
            elif task.kind == "recall":
                number = int(task.evidence.removeprefix("e"))
                old = tasks[number - 1]
                assert number <= j and old.kind != "recall" and repos == ["episodes"]
                assert task.question == ("What was the correct answer to task "
                                         f"{number}, which asked: {old.question}")
                assert task.answer == old.answer and task.needs_retrieval
            else:
                assert repos == ["facts"] and facts[task.evidence][1] == task.answer
    assert min(kinds.values()) >= 20 and set(kinds) == {"fact", "skill", "recall"}
    with pytest.raises(ConfigError, match="typed_store"):
        gym.make("memgym/ProactiveRetrieval-v1", p_recall=0.5)
    with pytest.raises(ConfigError, match="p_skill \\+ p_recall"):
        _make(p_skill=0.6, p_recall=0.6)


def test_oracle_beats_the_best_heuristic_beats_never_retrieve():
    runs = {name: run_episodes(ENV_ID, {}, cls(), SEEDS, progress=False)
            for name, cls in baselines(ENV_ID).items()}
    means = {name: float(np.mean([t.episode_return for t in r])) for name, r in runs.items()}
    assert list(means) == ["oracle", "always-retrieve", "route-by-question", "noop"]
    assert means["oracle"] > means["route-by-question"] > means["always-retrieve"] \
        > means["noop"] > 0, means
    env = _make()
    success = {name: {} for name in runs}  # per task kind
    for seed in SEEDS:
        env.reset(seed=seed)
        kinds = [task.kind for task in env.tasks]
        missing = sum(item not in task.context for task in env.tasks
                      for _, item, _ in task.sources)
        # every answer right; one retrieval, from the right repository, per missing item
        assert runs["oracle"][seed].episode_return == pytest.approx(6 - COST * missing)
        for name, trajs in runs.items():
            assert all(s.parse_error is None for s in trajs[seed].steps)
            for step in trajs[seed].steps:
                if "ended_task" in step.info:
                    success[name].setdefault(kinds[step.info["ended_task"]], []).append(
                        step.reward_terms["success"])
    rate = {name: {k: float(np.mean(v)) for k, v in by_kind.items()}
            for name, by_kind in success.items()}
    # the facts alone never give a skill task's answer, and miss a recall whose key changed
    assert rate["always-retrieve"]["skill"] == rate["noop"]["skill"] == 0
    assert rate["always-retrieve"]["fact"] == 1 and rate["always-retrieve"]["recall"] < 1
    assert rate["route-by-question"]["skill"] > 0.5 and rate["route-by-question"]["recall"] == 1


def test_the_store_records_each_ended_task_and_is_a_function_of_seed_and_actions():
    def play(answers):
        env = _make()
        _, info = env.reset(seed=1)
        obs = None
        for answer in answers:
            obs, _, _, _, info = env.step(answer)
        return env, obs, info

    first = "What is Rachel's hometown?"
    env, _, info = play(["<answer>Lima</answer>"])
    assert env.tasks[0].question == first and info["task"] == 1
    assert env.store.texts["e1"] == (f"Task 1 asked: {first} Correct answer: Geneva. "
                                     "Answer given: Lima (wrong).")
    # the record is retrievable; a right answer is recorded as such; skills are fixed
    twin, obs, _ = play(["<answer>Geneva</answer>", f'<search repo="episodes">{first}</search>'])
    assert f"[e1] Task 1 asked: {first} Correct answer: Geneva. Answer given: Geneva " \
           "(correct)." in obs.split("Retrieved:")[1]
    assert [e.text for e in env.store.banks["skills"]] == [
        e.text for e in twin.store.banks["skills"]]
    assert len(env.store.banks["skills"]) == len(SKILLS)
    # same seed and actions: the same store, entry for entry
    again, _, _ = play(["<answer>Lima</answer>"])
    for repo in REPOSITORIES:
        assert again.store.banks[repo].snapshot() == env.store.banks[repo].snapshot()
    # a long, multi-line answer is quoted on one line, cut to 40 characters
    long_env, obs, _ = play(["<answer>" + "word\n " * 200 + "</answer>",
                             f'<search repo="episodes">{first}</search>'])
    assert long_env.store.texts["e1"].endswith(
        "Answer given: " + " ".join(["word"] * 8) + " (wrong).")
    assert long_env.observation_space.contains(obs)
