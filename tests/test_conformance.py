"""The conformance suite: every env in ``memgym.envs.ENVS`` gets these checks for free.

Actions come from each env's own scripted baselines (valid actions that move the episode the
way a real policy would) and from hypothesis (malformed text).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memgym import load_trajectories, write_trajectories
from memgym.engine import Completion
from memgym.envs import ENVS, baselines
from memgym.envs.base import MemgymEnv
from memgym.errors import ActionTypeError, ResetNeeded
from memgym.rollouts import run_episodes
from memgym.trajectory import trajectories_from_frame

ENV_IDS = sorted(ENVS)
SEEDS = (0, 1, 2)
STANDARD_INFO = {"ops", "op_results", "parse_error", "reward_terms", "segment_end"}


def _policies(env_id):
    return [cls() for cls in baselines(env_id).values()]


def _episode(env, seed, policy, limit):
    """Play one episode; returns the trace of everything an episode exposes."""
    obs, info = env.reset(seed=seed)
    trace = [obs]
    for _ in range(limit):
        action = policy.act([obs], [info])[0].text
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((action, obs, reward, terminated, truncated, info["segment_end"],
                      info["reward_terms"], info["op_results"], info["parse_error"]))
        if terminated or truncated:
            break
    return trace


@pytest.fixture(scope="module", params=ENV_IDS)
def env_id(request):
    return request.param


def test_make_and_check_env(env_id):
    env = gym.make(env_id)
    assert isinstance(env.unwrapped, MemgymEnv)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, str) and obs and env.observation_space.contains(obs)
    assert isinstance(env.unwrapped.max_steps, int) and env.unwrapped.max_steps >= 1


def test_baselines_are_declared(env_id):
    names = set(baselines(env_id))
    assert {"oracle", "noop"} <= names and len(names) >= 3, names


def test_steps_return_the_standard_info_and_end_within_the_limit(env_id):
    env = gym.make(env_id)
    limit = env.unwrapped.max_steps
    for policy in _policies(env_id):
        for seed in SEEDS:
            trace = _episode(env, seed, policy, limit)
            *_, last = trace
            assert last[3] or last[4], f"{policy.name} seed {seed}: no end within {limit} steps"
            assert last[5] is not None, "the last step must end a segment"
            for (_, obs, reward, *_, terms, _, _) in trace[1:]:
                assert isinstance(reward, float) and reward == pytest.approx(sum(terms.values()))
                assert env.observation_space.contains(obs)
    _, info = env.reset(seed=0)
    step_info = env.step(_policies(env_id)[0].act([""], [info])[0].text)[4]
    assert set(step_info) >= STANDARD_INFO


def test_context_mode_is_declared_and_kept(env_id):
    """A ``rebuild`` env ends a segment on every step; an ``append`` env gives its context as
    chat messages whose next value extends the last one by the action (verbatim) and the env's
    replies, until a step declares a segment end."""
    env = gym.make(env_id)
    mode = env.unwrapped.context_mode
    assert mode in ("append", "rebuild")
    roles = {"system", "user", "assistant", "tool"}
    for policy in _policies(env_id):
        obs, info = env.reset(seed=0)
        for _ in range(env.unwrapped.max_steps):
            chat = info.get("chat")
            action = policy.act([obs], [info])[0].text
            obs, _, terminated, truncated, info = env.step(action)
            if mode == "rebuild":
                assert info["segment_end"] is not None and "chat" not in info
            else:
                assert all(set(m) == {"role", "content"} and m["role"] in roles
                           and isinstance(m["content"], str) for m in info["chat"])
                if info["segment_end"] is None:
                    turn = len(chat)
                    assert info["chat"][:turn] == chat
                    assert info["chat"][turn] == {"role": "assistant", "content": action}
            if terminated or truncated:
                break


def test_same_seed_and_actions_give_the_same_episode(env_id):
    for policy in _policies(env_id):
        a = _episode(gym.make(env_id), 7, policy, 1000)
        b = _episode(gym.make(env_id), 7, policy, 1000)
        assert a == b, policy.name
    firsts = {gym.make(env_id).reset(seed=s)[0] for s in range(6)}
    assert len(firsts) > 1, "different seeds should give different episodes"


def test_snapshot_restore_continues_identically(env_id):
    oracle = baselines(env_id)["oracle"]()
    env = gym.make(env_id).unwrapped
    full = _episode(env, 3, oracle, env.max_steps)
    if len(full) < 3:
        pytest.skip("single-step env: nothing to fork mid-episode")
    obs, info = env.reset(seed=3)
    obs, _, _, _, info = env.step(oracle.act([obs], [info])[0].text)
    snap = env.snapshot()
    rest = []
    for _ in range(2):  # continue, then rewind and continue again
        env.restore(snap)
        o, i, steps = obs, info, []
        for _ in range(env.max_steps):
            action = oracle.act([o], [i])[0].text
            o, r, term, trunc, i = env.step(action)
            steps.append((action, o, r, term, trunc, i["segment_end"], i["reward_terms"],
                          i["op_results"], i["parse_error"]))
            if term or trunc:
                break
        rest.append(steps)
    assert rest[0] == rest[1] == full[2:]


MALFORMED = st.one_of(
    st.text(max_size=300),
    st.text(alphabet='{}[]":,<>/ \\\nabcdeventxmlADUPTNOE0123456789', max_size=200),
    st.builds(lambda a, b: a + b, st.sampled_from(
        ['{"memory": [', "<think>", "<search>", "<answer>", "<ranking>", "<tool_call>",
         '{"name": "search", "arguments": ', "FINAL_ANSWER:", "\\boxed{", "Updated memory:"]),
        st.text(max_size=120)),
)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_malformed_actions_are_penalized_data(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    seen = {"steps": 0}

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(MALFORMED)
    def check(action):
        _, reward, terminated, truncated, info = env.step(action)
        seen["steps"] += 1
        assert isinstance(reward, float)
        if info["parse_error"] is not None:
            assert set(info["parse_error"]) == {"position", "reason"}
            assert info["ops"] == [] and min(info["reward_terms"].values()) < 0, info
        if terminated or truncated:
            env.reset(seed=seen["steps"] % 7)
            seen["steps"] = 0
        assert seen["steps"] < env.max_steps, "the episode outlived its declared limit"

    check()


@pytest.mark.parametrize("vector", ["sync", "async"])
def test_vector_envs_return_the_text_observations(env_id, vector):
    seeds, oracle = [11, 12], baselines(env_id)["oracle"]()
    singles = [gym.make(env_id) for _ in seeds]
    resets = [env.reset(seed=s) for env, s in zip(singles, seeds, strict=True)]
    actions = [oracle.act([o], [i])[0].text for o, i in resets]
    stepped = [env.step(a)[0] for env, a in zip(singles, actions, strict=True)]
    vec = gym.make_vec(env_id, num_envs=2, vectorization_mode=vector,
                       vector_kwargs={"shared_memory": False} if vector == "async" else {})
    try:
        obs, _ = vec.reset(seed=seeds)
        assert list(obs) == [o for o, _ in resets]
        step_obs = vec.step(np.array(actions, dtype=object))[0]
        assert list(step_obs) == stepped  # autoreset (next-step mode) keeps the final obs
    finally:
        vec.close()


# --------------------------------------------------------------------------- the API's edges
# Calling the API wrongly is a programming error (a typed exception); a bad action *text* is data.


def test_step_before_reset_raises(env_id):
    for env in (gym.make(env_id), gym.make(env_id).unwrapped):
        with pytest.raises(ResetNeeded, match=r"before reset\(\)"):
            env.step("anything")


def test_step_after_the_end_raises_until_reset(env_id):
    oracle = baselines(env_id)["oracle"]()
    env = gym.make(env_id)
    trace = _episode(env, 0, oracle, env.unwrapped.max_steps)
    last_action = trace[-1][0]
    for _ in range(2):  # a refused step changes nothing: the next one is refused the same way
        with pytest.raises(ResetNeeded, match=rf"ended at step {len(trace) - 1}; call reset"):
            env.step(last_action)
    snap = env.unwrapped.snapshot()  # an ended episode restores as ended
    env.reset(seed=0)
    env.unwrapped.restore(snap)
    with pytest.raises(ResetNeeded):
        env.step(last_action)
    assert _episode(env, 0, oracle, env.unwrapped.max_steps) == trace


@pytest.mark.parametrize("action", [None, 7, b"bytes", ["a list"], np.array(["x"])])
def test_a_non_string_action_raises(env_id, action):
    oracle = baselines(env_id)["oracle"]()
    env = gym.make(env_id)
    obs, info = env.reset(seed=0)
    with pytest.raises(ActionTypeError, match="str"):
        env.step(action)
    good = oracle.act([obs], [info])[0].text
    fresh = gym.make(env_id)
    fresh.reset(seed=0)
    assert env.step(good)[:4] == fresh.step(good)[:4]  # the refused call changed nothing


class _Surrogates:
    """The oracle's actions with a lone UTF-16 surrogate appended (not valid Unicode)."""

    name = "surrogates"

    def __init__(self, env_id):
        self.oracle = baselines(env_id)["oracle"]()

    def act(self, observations, infos):
        return [Completion(c.text + "\ud800") for c in self.oracle.act(observations, infos)]


def test_a_surrogate_action_is_a_penalized_parse_error_and_the_episode_saves(env_id, tmp_path):
    env = gym.make(env_id)
    policy = _Surrogates(env_id)
    obs, info = env.reset(seed=0)
    action = policy.act([obs], [info])[0].text
    obs, reward, _, _, info = env.step(action)
    error = info["parse_error"]
    assert error is not None and "not valid Unicode" in error["reason"], info
    assert error["position"] == len(action) - 1 and info["ops"] == []
    assert min(info["reward_terms"].values()) < 0
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    assert env.observation_space.contains(obs)
    (traj,) = run_episodes(env_id, {}, policy, [0], num_envs=1, progress=False)
    assert all(s.parse_error is not None for s in traj.steps)
    path = write_trajectories([traj], tmp_path / "surrogates.parquet")
    (back,) = trajectories_from_frame(load_trajectories(path))
    assert [s.action for s in back.steps] == [
        s.action.replace("\ud800", "\ufffd") for s in traj.steps]
    for name in ("observation", "parse_error", "reward", "reward_terms", "info"):
        assert [getattr(s, name) for s in back.steps] == [getattr(s, name) for s in traj.steps]
