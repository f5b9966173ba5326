"""``memgym/LoCoMoMemoryManager-v3`` (``rate_turns``): the policy rates each turn
``{"importance": n}`` and a bounded bank keeps the highest-rated turns; the codec and the -v3
baselines."""

import gymnasium as gym
import numpy as np
import pytest

import memgym.envs  # noqa: F401  (registers the envs)
from memgym.codecs import CutAction, ImportanceCodec
from memgym.envs import baselines
from memgym.errors import ConfigError
from memgym.metrics import trajectory_metrics
from memgym.ops import Add, Rate
from memgym.report import EvalResult, pair_with_best_heuristic
from memgym.rollouts.runner import run_episodes

ENV_ID = "memgym/LoCoMoMemoryManager-v3"
KWARGS = {"split": "val", "window": 10, "max_entries": 1}  # the quickstart's validation env
SEEDS = list(range(1_000_000, 1_000_048))  # memgym train's validation seeds


def test_codec_reads_a_score_leniently_and_refuses_what_is_not_one():
    codec = ImportanceCodec()
    for text, score in (('{"importance": 7}', 7), ('```json\n{"importance": "3"}\n```', 3),
                        ('Rating: {"importance": 4.0}', 4), ('{"importance": 0}', 0)):
        parsed = codec.decode(text)
        assert parsed.ops == (Rate(score),), text
        assert text[parsed.spans[0][0]:parsed.end].startswith('{"importance"')
    for text, reason in (("seven", "no JSON object"), ('{"importance": n}', "invalid JSON"),
                         ('{"score": 3}', 'expected {"importance": n}'),
                         ('{"importance": 10}', "in [0, 9], got 10"),
                         ('{"importance": -1}', "got -1"), ('{"importance": true}', "got True"),
                         ('{"importance": 2.5}', "got 2.5")):
        parsed = codec.decode(text)
        assert parsed.ops == () and reason in parsed.error.reason, (text, parsed.error)
    assert ImportanceCodec(max_score=3).decode('{"importance": 4}').error is not None
    assert codec.encode([Rate(5)]) == '{"importance": 5}'
    with pytest.raises(TypeError, match="exactly one Rate"):
        codec.encode([Add("x")])


def test_the_bank_keeps_the_highest_rated_turns_and_a_tie_does_not_replace():
    env = gym.make(ENV_ID, **{**KWARGS, "max_entries": 2}).unwrapped
    _, info = env.reset(seed=SEEDS[0])
    turns, results = [], []
    for score in (0, 3, 5, 4, 4, 9):
        turns.append(info["turn"]["as_memory"])
        _, reward, _, _, info = env.step(f'{{"importance": {score}}}')
        assert reward == 0.0 and info["ops"] == [{"score": score, "kind": "rate"}]
        results.append(info["op_results"][0])
    # applied throughout: a turn not stored (rated 0, or not above the lowest) has no id
    assert [(r["applied"], r["id"]) for r in results] == [
        (True, None), (True, "0"), (True, "1"), (True, "0"), (True, None), (True, "0")]
    # turn 3 replaced turn 1 (rated 3, the lowest), turn 5 replaced turn 3 (4 < 5)
    assert [e.text for e in env.bank] == [turns[5], turns[2]]
    assert env.ratings == {"0": 9, "1": 5}
    with pytest.raises(ConfigError, match="give one"):
        gym.make(ENV_ID, keep_turns=True)
    with pytest.raises(ConfigError, match="positive integer"):
        ImportanceCodec(max_score=0)


def test_memory_metrics_count_what_the_ratings_stored():
    (traj,) = run_episodes(ENV_ID, {**KWARGS, "max_entries": 2}, baselines(ENV_ID)["oracle"](),
                           SEEDS[:1], progress=False)
    stored = [r["id"] for s in traj.steps for r in s.op_results if r["id"] is not None]
    metrics = trajectory_metrics(traj)
    assert metrics["bank_size_final"] == len(set(stored)) == 2
    assert metrics["rejected_op_rate"] == 0.0


def test_observation_is_the_turn_alone_and_format_errors_are_penalized():
    env = gym.make(ENV_ID, **KWARGS).unwrapped
    observation, info = env.reset(seed=SEEDS[1])
    instructions, date, turn = observation.split("\n")
    assert instructions == env.instructions and "1 highest-rated" in instructions
    assert date == f"Date: {info['turn']['date']}"
    assert turn == f"New turn: {info['turn']['speaker']}: {info['turn']['text']}"
    assert '"importance"' in instructions and "{" not in instructions  # no object to copy
    for action in ('{"importance": 5} and more', CutAction('{"importance": 5}'), "5"):
        _, reward, _, _, info = env.step(action)
        assert info["parse_error"] is not None and reward == -0.1, action
    assert len(env.bank) == 0


def _returns(env_id, policy, kwargs=KWARGS):
    runs = run_episodes(env_id, kwargs, policy, SEEDS, num_envs=24, progress=False)
    return np.array([t.episode_return for t in runs]), [t.seed for t in runs]


def test_rating_every_turn_alike_keeps_the_first_turn_as_v1_store_all_does():
    v3, _ = _returns(ENV_ID, baselines(ENV_ID)["store-all"]())
    v1_id = "memgym/LoCoMoMemoryManager-v1"
    v1, _ = _returns(v1_id, baselines(v1_id)["store-all"](), {**KWARGS, "related_k": 3})
    np.testing.assert_array_equal(v3, v1)
    assert v3.mean() > 0.3


def test_baselines_on_the_quickstart_seeds_and_the_reference_is_rate_length():
    scripted = baselines(ENV_ID)
    results = []
    for name, mean in (("oracle", 0.6752), ("rate-length", 0.4977), ("store-all", 0.3908),
                       ("noop", 0.0)):
        returns, seeds = _returns(ENV_ID, scripted[name]())
        assert returns.mean() == pytest.approx(mean, abs=1e-4), name
        results.append(EvalResult(name, returns.mean(), 0.0, len(returns), 0.0,
                                  seeds=seeds, returns=returns.tolist()))
    assert pair_with_best_heuristic(results, scripted).policy == "rate-length"
