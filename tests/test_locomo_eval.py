"""Memory-R1's whole-conversation LoCoMo protocol, on the real locomo10.json."""

import random

import pandas as pd
import pytest
from typer.testing import CliRunner

from memgym import load_trajectories, write_trajectories
from memgym.cli import app
from memgym.envs import baselines
from memgym.envs.benchmarks import BENCHMARKS
from memgym.envs.locomo.data import ADVERSARIAL, CATEGORIES, SPLITS, load_locomo
from memgym.envs.locomo.source import LoCoMoSource
from memgym.errors import ConfigError
from memgym.replay import replay
from memgym.rollouts import run_episodes
from memgym.rollouts.whole_eval import category_table, evaluate_whole, whole_instance_kwargs
from memgym.scoring import best_span, span_f1, token_f1

ENV_ID = "memgym/LoCoMoMemoryManager-v1"
LOCOMO = BENCHMARKS["locomo"]


def test_whole_conversations_hold_every_turn_and_question():
    conversations = load_locomo()
    source = LoCoMoSource("test", window=None)
    assert source.num_instances == len(SPLITS["test"]) == 8
    for k, c in enumerate(SPLITS["test"]):
        conv, instance = conversations[c], source.instance(k)
        assert [i.id for i in instance.items] == [t.dia_id for t in conv.turns]
        qas = [q for q in conv.qa if q.category != ADVERSARIAL]
        assert [q.question for q in instance.questions] == [q.question for q in qas]
        assert [q.category for q in instance.questions] == [CATEGORIES[q.category] for q in qas]
    one = LoCoMoSource("test", window=None, conversation=3)
    assert one.num_instances == 1 and one.instance(0) == source.instance(3)
    with pytest.raises(ConfigError, match=r"conversation must be in \[0, 8\)"):
        LoCoMoSource("test", window=None, conversation=8)
    with pytest.raises(ConfigError, match="window must be >= 1 or None"):
        LoCoMoSource("test", window=0)


def test_per_episode_env_kwargs_are_recorded_and_replay(tmp_path):
    kwargs = [{"window": w} for w in (3, 5, 4)]
    trajs = run_episodes(ENV_ID, kwargs, baselines(ENV_ID)["mem0-like"](), [7, 7, 8],
                         num_envs=2, progress=False)
    assert [t.config for t in trajs] == kwargs
    assert [len(t.steps) for t in trajs] == [3, 5, 4]
    report = replay(load_trajectories(write_trajectories(trajs, tmp_path / "t.parquet")))
    assert report.ok and report.steps == 12
    with pytest.raises(ConfigError, match="one dict per seed"):
        run_episodes(ENV_ID, kwargs[:2], baselines(ENV_ID)["noop"](), [0, 1, 2])


def test_best_span_is_the_span_that_span_f1_scores():
    assert best_span("Caroline went to the support group on 7 May 2023.", "7 May 2023") \
        == "7 may 2023"
    assert best_span("They adopted a dog and a cat", "a cat") == "cat"  # articles normalized
    assert best_span("nothing shared here", "Paris") == ""
    rng = random.Random(0)
    words = ["a", "b", "c", "d", "e", "f"]  # "a" normalizes away: never all of it
    for _ in range(500):
        text = " ".join(rng.choices(words, k=rng.randint(1, 12))) + " f"
        gold = " ".join(rng.choices(words, k=rng.randint(1, 4))) + " e"
        assert token_f1(best_span(text, gold), gold) == pytest.approx(span_f1(text, gold))


def test_category_table_means_per_category_and_overall():
    scores = pd.DataFrame({"policy": ["p"] * 4 + ["q"],
                           "category": ["temporal", "single-hop", "single-hop", "temporal",
                                        "multi-hop"],
                           "f1": [1.0, 0.5, 0.0, 0.0, 1.0], "bleu1": [1.0, 0.4, 0.2, 0.0, 0.3],
                           "em": [1.0, 0.0, 0.0, 0.0, 1.0]})
    table = category_table(scores, LOCOMO.categories)
    assert table[["policy", "category", "questions"]].values.tolist() == [
        ["p", "single-hop", 2], ["p", "temporal", 2], ["p", "overall", 4],
        ["q", "multi-hop", 1], ["q", "overall", 1]]
    assert table["f1"].tolist() == pytest.approx([0.25, 0.5, 0.375, 1.0, 1.0])
    assert table["bleu1"].tolist() == pytest.approx([0.3, 0.5, 0.4, 0.3, 0.3])


def test_store_all_reads_the_whole_validation_conversation():
    conv = load_locomo()[SPLITS["val"][0]]
    scores = evaluate_whole(ENV_ID, {}, baselines(ENV_ID)["store-all"](), LOCOMO, "val")
    assert (scores["steps"] == len(conv.turns)).all()
    assert (scores["bank_size"] == len(conv.turns)).all()  # unbounded bank: every turn kept
    assert len(scores) == sum(q.category != ADVERSARIAL for q in conv.qa)
    # the span answerer's score is the F1 of the best span of the memory it picked
    kwargs = whole_instance_kwargs(ENV_ID, {}, "val", LOCOMO)[0]
    traj = run_episodes(ENV_ID, kwargs, baselines(ENV_ID)["store-all"](), [0], progress=False)[0]
    env_scores = [r["score"] for r in traj.steps[-1].info["qa"]]
    assert scores["f1"].tolist() == pytest.approx(env_scores)
    assert traj.steps[-1].reward_terms["qa"] == pytest.approx(scores["f1"].mean())
    assert 0.3 < scores["f1"].mean() < 0.9 and (scores["em"] <= scores["f1"]).all()
    with pytest.raises(ConfigError, match=r"sets \['window'\] itself"):
        whole_instance_kwargs(ENV_ID, {"window": 8}, "test", LOCOMO)


def test_cli_prints_the_per_category_table(tmp_path):
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["locomo-eval", "--split", "val", "--policy", "store-all",
                                      "--policy", "noop", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    for word in ("single-hop", "multi-hop", "temporal", "overall"):  # val has no open-domain
        assert word in result.output
    scores = pd.read_csv(out)
    assert set(scores["policy"]) == {"store-all", "noop"}
    assert (scores.loc[scores["policy"] == "noop", ["f1", "bleu1", "em"]] == 0).all().all()
