import math

import pytest

from memgym import load_trajectories, write_trajectories
from memgym.envs import baselines
from memgym.errors import ConfigError
from memgym.metrics import summarize, training_row, trajectory_metrics
from memgym.rollouts import run_episodes
from memgym.trajectory import Step, Trajectory

from .conftest import ENV_ID


def _result(kind, applied, entry, **fields):
    return {"op": {**fields, "kind": kind}, "applied": applied, "id": entry,
            "reason": "" if applied else "no entry"}


def _hand_built() -> Trajectory:
    """step 0: ADD A (id 0), ADD B (id 1); step 1: UPDATE 0, DELETE 1, ADD C (id 2), UPDATE 9
    (rejected); step 2: a parse error, then two questions retrieve [0, 2] (0 supports) and [2]."""
    s0 = [_result("add", True, "0", text="A"), _result("add", True, "1", text="B")]
    s1 = [_result("update", True, "0", id="0", text="A2"), _result("delete", True, "1", id="1"),
          _result("add", True, "2", text="C"), _result("update", False, "9", id="9", text="x")]
    qa = [{"question": "q1", "retrieved": ["0", "2"], "supporting": ["0"]},
          {"question": "q2", "retrieved": ["2"], "supporting": []}]
    steps = [
        Step(0, "o0", "a0", ops=[r["op"] for r in s0], op_results=s0, info={"bank_size": 2}),
        Step(1, "o1", "a1", ops=[r["op"] for r in s1], op_results=s1, info={"bank_size": 2}),
        Step(2, "o2", "bad", parse_error={"position": 0, "reason": "x"}, reward=0.5,
             reward_terms={"qa": 0.5}, terminated=True, segment_end="end",
             info={"bank_size": 2, "qa": qa}),
    ]
    return Trajectory("memgym/X-v0", 0, {}, "hand", steps, id="hand")


def test_metrics_of_a_hand_built_trajectory_equal_hand_computed_values(tmp_path):
    expected = {
        "steps": 3, "episode_return": 0.5, "ops_per_step": 6 / 3,
        "op_add": 3 / 6, "op_update": 2 / 6, "op_delete": 1 / 6, "op_noop": 0.0,
        "parse_error_rate": 1 / 3, "rejected_op_rate": 1 / 6,
        "bank_size_mean": 2.0, "bank_size_final": 2,  # {0, 1} → {0, 2} → {0, 2}
        "reads": 3,
        "read_age_mean": (2 + 1 + 1) / 3,  # entry 0 created at 0, entry 2 at 1; read at 2
        "read_staleness_mean": (1 + 1 + 1) / 3,  # entry 0 updated at 1
        "writes": 4,  # ADD 0, ADD 1, UPDATE 0, ADD 2
        "write_read_hit_rate": 1 / 3,  # of created 0, 1, 2 only 0 supports an answer
        "wasted_writes": 2,  # ADD 0 (overwritten before the read), ADD 1 (deleted)
        "wasted_write_rate": 2 / 4,
    }
    row = trajectory_metrics(_hand_built())
    assert {k: row[k] for k in expected} == pytest.approx(expected)
    frame = load_trajectories(write_trajectories([_hand_built()], tmp_path / "t.parquet"))
    assert summarize(frame).iloc[0][list(expected)].to_dict() == pytest.approx(expected)


def test_read_metrics_are_nan_without_qa_records():
    traj = _hand_built()
    traj.steps[2].info = None  # e.g. a schema-1 file
    row = trajectory_metrics(traj)
    for name in ("reads", "read_age_mean", "write_read_hit_rate", "wasted_writes",
                 "wasted_write_rate"):
        assert math.isnan(row[name]), name
    assert row["writes"] == 4 and row["bank_size_final"] == 2


def test_summaries_of_scripted_rollouts():
    trajs = []
    for cls in baselines(ENV_ID).values():
        trajs += run_episodes(ENV_ID, {"window": 4}, cls(), range(6), progress=False)
    table = summarize(trajs)
    assert len(table) == 6 * len(baselines(ENV_ID))
    for traj, row in zip(trajs, table.itertuples(), strict=True):
        assert row.bank_size_final == traj.steps[-1].info["bank_size"]  # exact reconstruction
    per_policy = summarize(trajs, by="policy").set_index("policy")
    assert set(per_policy["trajectories"]) == {6}
    assert per_policy.at["noop", "writes"] == 0 and per_policy.at["noop", "ops_per_step"] == 0
    assert math.isnan(per_policy.at["noop", "op_add"])  # {"memory": []}: no op to mix
    assert per_policy.at["store-all", "op_add"] == 1.0
    assert per_policy.at["store-all", "bank_size_final"] == 4.0
    assert 0 < per_policy.at["oracle", "write_read_hit_rate"] <= 1
    row = training_row(trajs)
    assert set(row) >= {"op_add", "mem_bank_size_final", "mem_write_read_hit_rate"}
    with pytest.raises(ConfigError, match="by must be"):
        summarize(trajs, by="seed")


def test_rollout_diagnostics_count_segments_prefix_breaks_and_cut_completions():
    from memgym.metrics import rollout_diagnostics
    from memgym.segments import build_segments
    from memgym.trajectory import Step, Trajectory

    def step(i, prompt, completion, end=None):
        return Step(i, "", "", segment_end=end, prompt_ids=prompt, completion_ids=completion,
                    logprobs=[0.0] * len(completion))

    eos = 2
    steps = [step(0, [1, 5], [7, 7, 7]),  # cut: 3 tokens, no EOS
             step(1, [1, 5, 7, 7, 7, 9], [8, eos]),  # extends step 0
             step(2, [4], [6, 6, eos], "end")]  # does not extend: prefix break; 3 with EOS
    a = Trajectory("e", 0, {}, "p", steps, segments=build_segments(steps))
    b = Trajectory("e", 1, {}, "p", [step(0, [1], [3], "end")])
    b.segments = build_segments(b.steps)
    row = rollout_diagnostics([a, b], max_new_tokens=3, eos_token_id=eos)
    assert [s.end_reason for s in a.segments] == ["prefix_break", "end"]
    assert row == {"rollout_segments_per_trajectory": 1.5, "rollout_prefix_breaks": 1.0,
                   "rollout_truncated_rate": 0.25}
