import json

import pytest
from typer.testing import CliRunner

from memgym import write_trajectories
from memgym.cli import app
from memgym.envs import baselines
from memgym.errors import ConfigError
from memgym.export import dpo_records, export, sft_records
from memgym.rollouts import run_episodes
from memgym.trajectory import Step, Trajectory

from .conftest import ENV_ID


def _traj(policy, seed, actions, observations, ret, parse_errors=(), config=None):
    steps = [Step(i, obs, act, reward=ret if i == len(actions) - 1 else 0.0,
                  parse_error={"position": 0, "reason": "x"} if i in parse_errors else None)
             for i, (obs, act) in enumerate(zip(observations, actions, strict=True))]
    return Trajectory("memgym/X-v0", seed, config or {"w": 1}, policy, steps)


def _user(text):
    return [{"role": "user", "content": text}]


def _bot(text):
    return [{"role": "assistant", "content": text}]


def test_sft_records_are_conversations_of_parsed_steps():
    good = _traj("a", 0, ["x0", "x1"], ["o0", "o1"], 1.0)
    bad = _traj("b", 0, ["y0", "y1"], ["o0", "o1'"], 0.2, parse_errors=(1,))
    assert list(sft_records([good, bad])) == [
        {"messages": _user("o0") + _bot("x0")}, {"messages": _user("o1") + _bot("x1")},
        {"messages": _user("o0") + _bot("y0")}]
    assert len(list(sft_records([good, bad], min_return=0.5))) == 2


def test_dpo_pairs_same_episode_same_prompt_higher_return_chosen():
    best = _traj("a", 0, ["x0", "x1", "x2"], ["o0", "o1", "o2"], 1.0)
    worse = _traj("b", 0, ["y0", "x1", "y2"], ["o0", "o1", "DIFF"], 0.5)
    tie = _traj("c", 0, ["z0", "z1", "z2"], ["o0", "o1", "o2"], 0.5)
    other_seed = _traj("d", 1, ["w0", "w1", "w2"], ["o0", "o1", "o2"], 0.0)
    other_config = _traj("e", 0, ["v0", "v1", "v2"], ["o0", "o1", "o2"], 0.0, config={"w": 2})
    records = list(dpo_records([best, worse, tie, other_seed, other_config]))
    assert records == [
        # best vs worse: step 0 (same prompt, different actions); step 1 same action; step 2
        # different prompts
        {"prompt": _user("o0"), "chosen": _bot("x0"), "rejected": _bot("y0")},
        # best vs tie: every step
        {"prompt": _user("o0"), "chosen": _bot("x0"), "rejected": _bot("z0")},
        {"prompt": _user("o1"), "chosen": _bot("x1"), "rejected": _bot("z1")},
        {"prompt": _user("o2"), "chosen": _bot("x2"), "rejected": _bot("z2")},
        # worse vs tie: equal returns, no pair
    ]
    assert list(dpo_records([best, worse, tie], min_return=2.0)) == []


def test_cli_export_filters_and_writes_trl_formats(tmp_path):
    trajs = []
    for name in ("oracle", "store-all"):
        trajs += run_episodes(ENV_ID, {"window": 4}, baselines(ENV_ID)[name](), [0, 1, 2],
                              progress=False)
    path = write_trajectories(trajs, tmp_path / "t.parquet")
    out = tmp_path / "sft.jsonl"
    result = CliRunner().invoke(app, ["export", str(path), "--format", "sft", "--out", str(out),
                                      "--policy", "store-all", "--env", ENV_ID])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 12 and "wrote 12 sft records" in result.output
    assert lines[0]["messages"][1]["content"] == trajs[3].steps[0].action
    dpo = tmp_path / "dpo.jsonl"
    assert CliRunner().invoke(app, ["export", str(path), "--format", "dpo", "--out",
                                    str(dpo)]).exit_code == 0
    pairs = [json.loads(line) for line in dpo.read_text().splitlines()]
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    assert pairs[0]["prompt"][0]["content"] == trajs[0].steps[0].observation
    none = CliRunner().invoke(app, ["export", str(path), "--format", "sft", "--out", str(out),
                                    "--min-return", "99"])
    assert none.exit_code == 0 and out.read_text() == ""
    with pytest.raises(ConfigError, match="format must be one of"):
        export(trajs, "csv", out)
    trl = pytest.importorskip("trl.data_utils")
    assert trl.is_conversational(lines[0]) and trl.is_conversational(pairs[0])
