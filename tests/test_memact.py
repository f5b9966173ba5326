from collections import Counter

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memgym import load_trajectories, write_trajectories
from memgym.codecs.memact import MemActCodec
from memgym.context import Message, WorkingContext, count_tokens
from memgym.envs import baselines
from memgym.envs.memact.env import CUE
from memgym.errors import ConfigError, ResetNeeded
from memgym.ops import Answer, EditContext, Retrieve
from memgym.replay import replay
from memgym.rollouts import TokenizedPolicy, run_episodes
from memgym.scoring import normalize_answer, surface_span

ENV_ID = "memgym/MemAct-v0"
codec = MemActCodec()


def make(**kwargs):
    return gym.make(ENV_ID, **kwargs).unwrapped


def search(query, k=2):
    return codec.encode([Retrieve(query, k)])


def prune(ids, memory):
    return codec.encode([EditContext(tuple(ids), memory)])


def test_check_env():
    check_env(make(), skip_render_check=True)


def test_codec_canonical_lenient_and_errors():
    ops = (Retrieve("Shirley Temple", 2), Retrieve("Kiss and Tell", 3))
    assert codec.decode(codec.encode(ops)).ops == ops
    edit = EditContext(("ab12cd34", "00ff00ff"), "Temple was Chief of Protocol")
    assert codec.decode(codec.encode([edit])).ops == (edit,)
    assert codec.decode("I think.\nFINAL_ANSWER:  Chief of Protocol \nbecause").ops == (
        Answer("Chief of Protocol"),)
    lenient = ('<tool_call>{"name": "prune_context", "arguments": "{\\"delete_ids\\": '
               '\\"ab12cd34, 7\\"}"}')  # string arguments, id string, no closing tag
    assert codec.decode(lenient).ops == (EditContext(("ab12cd34", "7"), ""),)
    assert codec.decode('{"name": "search", "arguments": {"query": "q", "topk": "4"}}').ops == (
        Retrieve("q", 4),)
    assert codec.decode('<tool_call>{"name": "search", "arguments": {"query": "q"}}'
                        "</tool_call> FINAL_ANSWER: x").ops == (Retrieve("q", 3),)
    for bad, reason in [("", "expected a <tool_call>"), ("<tool_call>{oops", "invalid JSON"),
                        ('{"name": "shell", "arguments": {}}', "unknown tool"),
                        ('{"name": "search", "arguments": {"topk": 2}}', "string 'query'"),
                        (search("a") + prune(["x"], "m"), "only tool call"),
                        (search("a") * 5, "at most 4")]:
        parsed = codec.decode(bad)
        assert parsed.ops == () and reason in parsed.error.reason


def test_working_context_prune_rule_render_and_tokens():
    ctx = WorkingContext([Message("system", "S"), Message("user", "Q")])
    ctx.append(Message("assistant", "two calls", tool_call_ids=("a", "b")))
    ctx.append(Message("tool", "ra", "a"))
    ctx.append(Message("tool", "rb", "b"))
    ctx.append(Message("assistant", "one call", tool_call_ids=("c",)))
    ctx.append(Message("tool", "rc", "c"))
    snap = ctx.snapshot()
    text = ("<|system|>\nS\n<|user|>\nQ\n<|assistant|>\ntwo calls\n<|tool id=a|>\nra\n"
            "<|tool id=b|>\nrb\n<|assistant|>\none call\n<|tool id=c|>\nrc\n")
    assert ctx.render() == text and ctx.count_tokens() == count_tokens(text) == 31  # ceil(121 / 4)
    rejected = ctx.apply(EditContext(("a", "zz"), "m"))
    assert not rejected.applied and "zz" in rejected.reason and ctx.snapshot() == snap
    assert ctx.apply(EditContext(("a", "c"), "m")).applied
    # "two calls" keeps its call b, so it stays; "one call" lost its only call, so it goes
    assert [m.content for m in ctx.messages] == ["S", "Q", "two calls", "rb"]
    ctx.restore(snap)
    assert ctx.render() == text


def test_observation_prefix_grows_until_prune_ends_a_segment():
    env = make()
    obs0, info = env.reset(seed=0)
    q = info["question"]
    assert obs0.endswith(f"<|user|>\nQuestion: {q}\n{CUE}") and "FINAL_ANSWER:" in obs0
    gold = info["privileged"]["answers"][0]
    assert gold not in obs0 and info["context_tokens"] == count_tokens(obs0[:-len(CUE)])
    titles = info["privileged"]["supporting_titles"]
    obs, ids = obs0, []
    for title in titles:  # two searches: each observation extends the previous one
        action = search(title)
        nxt, reward, term, trunc, info = env.step(action)
        (res,) = info["op_results"]
        ids.append(res["id"])
        assert len(res["id"]) == 8 and res["applied"] and (reward, term, trunc) == (0, 0, 0)
        assert info["segment_end"] is None
        assert nxt.startswith(obs + action + f"\n<|tool id={res['id']}|>\n[1] ")
        assert title in nxt[len(obs):] and nxt.endswith(CUE)
        obs = nxt
    assert info["peak_context_tokens"] == info["context_tokens"] > 2 * 100
    action = prune(ids[:1], f"{titles[0]} is relevant")
    nxt, reward, term, trunc, info = env.step(action)
    assert info["segment_end"] == "edit" and info["num_prunes"] == 1 and reward == 0.0
    assert not nxt.startswith(obs) and f"id={ids[0]}|>" not in nxt and f"id={ids[1]}|>" in nxt
    assert nxt.startswith(obs0) and f"{titles[0]} is relevant" in nxt
    assert info["context_tokens"] < info["peak_context_tokens"]
    final, reward, term, trunc, info = env.step(f"FINAL_ANSWER: {gold}")
    assert final.startswith(nxt + f"FINAL_ANSWER: {gold}")
    assert (reward, term, trunc, info["segment_end"]) == (1.0, True, False, "end")
    assert info["reward_terms"] == {"answer": 1.0, "format": 0.0}
    assert info["end_reason"] == "answer" and info["correct"] and info["prediction"] == gold
    with pytest.raises(ResetNeeded, match="ended at step"):  # stepping after the end
        env.step("FINAL_ANSWER: x")


def test_format_penalty_and_rejected_prune():
    env = make(format_penalty=0.25)
    obs, _ = env.reset(seed=3)
    nxt, reward, _, _, info = env.step("garbage")
    assert reward == -0.25 and info["ops"] == [] and info["segment_end"] is None
    assert "expected a <tool_call>" in info["parse_error"]["reason"]
    err_id = info["messages"][-1]["id"]
    assert nxt.startswith(obs + "garbage\n" + f"<|tool id={err_id}|>\nError: could not parse")
    obs = nxt
    nxt, reward, _, _, info = env.step(prune(["nope1234"], "m"))
    assert reward == -0.25 and info["parse_error"] is None and info["num_prunes"] == 0
    assert not info["op_results"][0]["applied"] and "nope1234" in info["op_results"][0]["reason"]
    assert info["segment_end"] is None and nxt.startswith(obs) and err_id in nxt
    _, reward, _, _, info = env.step(search("   "))
    assert reward == -0.25 and info["op_results"][0]["reason"] == "empty query"
    nxt, reward, _, _, info = env.step(prune([err_id], "m"))  # errors can be pruned too
    assert reward == 0.0 and info["segment_end"] == "edit" and "garbage" not in nxt
    _, reward, term, _, info = env.step("FINAL_ANSWER: definitely wrong")
    assert (reward, term, info["correct"]) == (0.0, True, False)


def test_f1_judge_threshold():
    for judge, expected in [("em", (0.0, 0.0, 1.0)), ("f1", (1.0, 0.0, 1.0))]:
        env = make(judge=judge, f1_threshold=0.6)
        rewards = []
        for pred in ["Chief of Protocol of US", "Protocol", "the chief of protocol."]:
            _, info = env.reset(seed=0, options={"episode": 0})
            assert info["privileged"]["answers"] == ["Chief of Protocol"]
            rewards.append(env.step(f"FINAL_ANSWER: {pred}")[1])  # F1 0.75, 0.5, 1.0
        assert tuple(rewards) == expected


def test_context_budget_and_step_limit():
    env = make(max_context_tokens=600, max_topk=5)
    _, info = env.reset(seed=1)
    _, reward, term, trunc, info = env.step(search(info["question"], 5))
    assert (reward, term, trunc) == (0.0, True, False) and info["context_tokens"] > 600
    assert info["end_reason"] == "context_overflow" and info["segment_end"] == "end"
    env = make(max_steps=2)
    _, info = env.reset(seed=1)
    env.step(search("a"))
    _, reward, term, trunc, info = env.step(search("b"))
    assert (term, trunc, info["end_reason"], info["segment_end"]) == (False, True, "max_steps",
                                                                      "end")


def _trace(env, seed, actions):
    out = [env.reset(seed=seed)]
    out += [env.step(a) for a in actions]
    return out


def test_determinism_and_snapshot_restore():
    actions = [search("American actress"), "junk", search("film director", 3),
               prune([], "nothing yet"), "FINAL_ANSWER: no"]
    a, b = _trace(make(), 5, actions), _trace(make(), 5, actions)
    assert a == b and a[-1][2] is True
    assert _trace(make(), 6, actions)[0] != a[0]
    env = make()
    _trace(env, 5, actions[:2])
    snap = env.snapshot()
    rest = [env.step(x) for x in actions[2:]]
    env.restore(snap)
    assert [env.step(x) for x in actions[2:]] == rest == a[3:]
    _, info = env.reset(seed=0, options={"episode": 4})
    assert info["instance"] == env.pool_data.questions[4].id


@pytest.fixture(scope="module")
def fuzz_env():
    return make()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=300) | st.sampled_from(
    ["<tool_call>", '{"name": "search"', "FINAL_ANSWER:", '<tool_call>{"name": "prune_context",'
     ' "arguments": {"delete_ids": [1, null]}}</tool_call>']), min_size=1, max_size=4))
def test_malformed_actions_are_data_not_crashes(fuzz_env, actions):
    env = fuzz_env
    env.reset(seed=1)
    for action in actions:
        obs, _, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        if info["parse_error"] is not None:
            assert info["reward_terms"]["format"] == -0.1 and info["ops"] == []
        if terminated or truncated:
            break


def test_bad_config_is_typed():
    for kwargs, match in [({"split": "dev"}, "split"), ({"pool_size": 5}, "pool_size"),
                          ({"judge": "llm"}, "judge"), ({"max_context_tokens": 100}, "max_con"),
                          ({"max_topk": 0}, "max_topk")]:
        with pytest.raises(ConfigError, match=match):
            make(**kwargs)
    with pytest.raises(ConfigError, match="episode"):
        make(split="val").reset(options={"episode": 50})


def test_baselines_rank_and_pool_holds_gold_paragraphs():
    means = {}
    for name, cls in baselines(ENV_ID).items():
        trajs = run_episodes(ENV_ID, {"split": "val"}, cls(), range(24), progress=False)
        means[name] = sum(t.episode_return for t in trajs) / len(trajs)
    assert means["oracle"] == 1.0 > means["extract-oracle"] > means["search-answer"]
    assert means["search-answer"] > means["noop"] == 0.0
    assert means["search-prune-answer"] == means["search-answer"]
    env = make(split="val", pool_size=50)
    env.reset(seed=2)
    assert len(env.pool) == 50 and set(env.pool_data.own[env.question_index]) <= env.pool


def test_extract_oracle_answers_what_its_context_shows():
    """The SFT teacher answers a gold alias as the results write it, the gold yes / no, or else
    search-answer's guess: never an answer the imitator could not read off its context."""
    env, policies = make(split="train", max_result_chars=300), baselines(ENV_ID)
    teacher, heuristic, kinds = policies["extract-oracle"](), policies["search-answer"](), Counter()
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        obs, _, _, _, info = env.step(teacher.act([obs], [info])[0].text)
        results, gold = info["messages"][-1]["content"], info["privileged"]["answers"]
        action = teacher.act([obs], [info])[0].text
        answer, reward = codec.decode(action).ops[0].text, env.step(action)[1]
        if normalize_answer(gold[0]) in ("yes", "no"):
            kinds["yes/no"] += 1
            assert answer == normalize_answer(gold[0]) and reward == 1.0
        elif surface_span(gold, results):
            kinds["shown"] += 1
            assert answer in results and reward == 1.0
        else:
            kinds["guess"] += 1
            assert action == heuristic.act([obs], [info])[0].text
    assert kinds["yes/no"] and kinds["shown"] and kinds["guess"]


def test_nq_dataset_searches_gold_passages_and_accepts_any_alias():
    env = make(split="val", dataset="nq", max_topk=1)
    assert env.instructions.startswith("You answer a question by")
    assert make().instructions.startswith("You answer a multi-hop question by")
    top_is_gold, aliases = 0, 0
    for seed in range(20):
        _, info = env.reset(seed=seed)
        q = env.pool_data.questions[env.question_index]
        assert info["question"] == q.question.rstrip("?") + "?" and info["instance"] == q.id
        assert info["privileged"]["answers"] == list(q.answers)
        assert len(env.pool_data.own[env.question_index]) == 1
        _, _, _, _, info = env.step(search(q.question, 1))
        top_is_gold += info["messages"][-1]["content"].startswith(f"[1] {q.paragraphs[0].title}")
        aliases += len(q.answers) > 1
        assert env.step(f"FINAL_ANSWER: {q.answers[-1]}")[1] == 1.0  # any alias is right
    assert top_is_gold >= 15 and aliases >= 3
    with pytest.raises(ConfigError, match="dataset"):
        make(dataset="squad")


def test_segments_split_at_prunes_and_replay_round_trips(tmp_path, smollm2):
    """The seed-7 oracle episode (search, search, prune, answer) recorded as SmolLM2 token ids
    under its real chat template: two segments, the pre-edit context then the last step."""
    policy = TokenizedPolicy(baselines(ENV_ID)["oracle"](), smollm2[1])
    (traj,) = run_episodes(ENV_ID, {}, policy, [7], progress=False)
    assert [type(op).__name__ for s in traj.steps for op in codec.decode(s.action).ops] == [
        "Retrieve", "Retrieve", "EditContext", "Answer"]
    segments = traj.segments
    assert [(s.step_start, s.step_end, s.end_reason) for s in segments] == [
        (0, 3, "edit"), (3, 4, "end")]
    first = segments[0]  # search, search, prune: the pre-edit context, one sample
    assert sum(first.loss_mask) == sum(len(s.completion_ids) for s in traj.steps[:3])
    assert first.prompt_ids + first.completion_ids == (traj.steps[2].prompt_ids
                                                       + traj.steps[2].completion_ids)
    assert first.prompt_ids == traj.steps[0].prompt_ids
    trajs = [traj]
    for cls in baselines(ENV_ID).values():
        trajs += run_episodes(ENV_ID, {"split": "test"}, cls(), [0, 1], progress=False)
    report = replay(load_trajectories(write_trajectories(trajs, tmp_path / "t.parquet")))
    assert report.ok and report.trajectories == 1 + 2 * len(baselines(ENV_ID))
