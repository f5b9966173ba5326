"""Token-faithful chat prompts with SmolLM2's real tokenizer and chat template: a prompt that
continues a generation extends its prompt + completion ids exactly, so a MemAct rollout is cut
into segments only where the env edits its context."""

from __future__ import annotations

import pytest

from memgym.engine import SamplingParams
from memgym.errors import PolicyError
from memgym.rollouts import LLMPolicy, TokenizedPolicy, run_episodes
from memgym.rollouts.chat import ChatRenderer, chat_prompt

MEMACT = "memgym/MemAct-v0"
SYSTEM = [{"role": "system", "content": "You search."}, {"role": "user", "content": "Who?"}]
ACTION = 'Searching: <tool_call>{"name": "search"}</tool_call>'


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2[1]


def _char_ids(tok, text):
    """Real token ids of ``text`` one character at a time: decodes to ``text`` but is not the
    tokenizer's own (canonical) tokenization, as a sampled completion need not be."""
    return [i for ch in text for i in tok(ch, add_special_tokens=False)["input_ids"]]


def test_next_prompt_extends_the_sampled_ids_not_a_re_tokenization(tok):
    renderer = ChatRenderer(tok)
    prompt = renderer.prompt(SYSTEM)
    assert list(prompt.ids) == tok.apply_chat_template(SYSTEM, add_generation_prompt=True,
                                                       tokenize=True, return_dict=True)[
        "input_ids"]
    completion = [*_char_ids(tok, ACTION), tok.eos_token_id]
    assert completion[:-1] != tok(ACTION, add_special_tokens=False)["input_ids"]
    renderer.record(SYSTEM, prompt, completion, ACTION)
    turn = [*SYSTEM, {"role": "assistant", "content": ACTION},
            {"role": "tool", "content": "[1] Ann"}]
    nxt = renderer.prompt(turn)
    head = list(prompt.ids) + completion
    assert list(nxt.ids[:len(head)]) == head
    assert tok.decode(list(nxt.ids)) == tok.apply_chat_template(turn, add_generation_prompt=True,
                                                                tokenize=False)
    # without the remembered ids the same conversation is re-tokenized and does not extend
    assert list(ChatRenderer(tok).prompt(turn).ids[:len(head)]) != head


def test_cut_completion_edited_context_and_other_text_are_tokenized_whole(tok):
    renderer = ChatRenderer(tok)
    prompt = renderer.prompt(SYSTEM)
    cut = tok(ACTION, add_special_tokens=False)["input_ids"][:5]  # max_new_tokens: no EOS
    text = tok.decode(cut)
    renderer.record(SYSTEM, prompt, cut, text)
    turn = [*SYSTEM, {"role": "assistant", "content": text}, {"role": "tool", "content": "ok"}]
    nxt = renderer.prompt(turn)
    assert list(nxt.ids[:len(prompt.ids) + 5]) == list(prompt.ids) + cut
    assert nxt.ids[len(prompt.ids) + 5] == tok.eos_token_id  # the template closes the turn
    whole = [*SYSTEM, {"role": "assistant", "content": text + "!"}]  # not what was generated
    assert list(renderer.prompt(whole).ids) == tok.apply_chat_template(
        whole, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]


def test_memory_masks_follow_the_engine_tokens_and_survive_the_file(tok, tmp_path):
    """Mem0-JSON oracle actions as SmolLM2 tokens: each run of memory tokens decodes to one op
    payload (plus at most the characters its edge tokens share), the JSON around is unmarked,
    and the segments' masks are saved and loaded with the file."""
    from memgym import load_trajectories, write_trajectories
    from memgym.envs import baselines
    from memgym.trajectory import trajectories_from_frame

    env_id = "memgym/SyntheticMemoryManager-v0"
    trajs = run_episodes(env_id, {}, TokenizedPolicy(baselines(env_id)["oracle"](), tok),
                         range(2), progress=False)
    payloads = 0
    for step in (s for t in trajs for s in t.steps):
        assert len(step.memory_mask) == len(step.completion_ids)
        runs, run = [], []
        for token, flag in zip(step.completion_ids, [*step.memory_mask], strict=True):
            if flag:
                run.append(token)
            elif run:
                runs, run = [*runs, tok.decode(run)], []
        texts = [step.action[a:b] for a, b in step.op_spans]
        assert len(runs) == len(texts) and not run
        for text, marked in zip(texts, runs, strict=True):
            assert text in marked and len(marked) <= len(text) + 4
        payloads += len(texts)
    assert payloads >= 4
    path = write_trajectories(trajs, tmp_path / "t.parquet")
    back = trajectories_from_frame(load_trajectories(path))
    assert [s.memory_mask for t in back for s in t.segments] == [
        s.memory_mask for t in trajs for s in t.segments]
    assert any(1 in s.memory_mask for t in back for s in t.segments)


def test_chat_prompt_uses_the_env_chat_else_one_user_message():
    assert chat_prompt("obs", {}) == [{"role": "user", "content": "obs"}]
    assert chat_prompt("obs", {"chat": SYSTEM}) == SYSTEM


def test_scripted_memact_rollouts_break_no_prefix(tok):
    """Every MemAct baseline, recorded as SmolLM2 token ids: one segment per applied prune plus
    the last, never a prefix break, and each segment one token-exact sample."""
    from memgym.envs import baselines

    for cls in baselines(MEMACT).values():
        for traj in run_episodes(MEMACT, {"split": "val"}, TokenizedPolicy(cls(), tok),
                                 range(6), progress=False):
            edits = sum(s.segment_end == "edit" for s in traj.steps)
            assert [s.end_reason for s in traj.segments] == ["edit"] * edits + ["end"]
            for seg in traj.segments:
                last = traj.steps[seg.step_end - 1]
                assert seg.prompt_ids + seg.completion_ids == (last.prompt_ids
                                                               + last.completion_ids)


@pytest.mark.slow
def test_llm_memact_rollout_breaks_no_prefix(engine):
    """SmolLM2 sampling at temperature 1 for 4 steps of 4 episodes: each episode is cut only
    where it prunes, and each segment's tokens are exactly its last prompt + completion."""
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=0)
    trajs = run_episodes(MEMACT, {"max_steps": 4}, LLMPolicy(engine, params), range(4),
                         progress=False)
    assert sum(len(t.steps) for t in trajs) > 4  # several steps share a segment
    for traj in trajs:
        edits = sum(s.segment_end == "edit" for s in traj.steps)
        assert [s.end_reason for s in traj.segments] == ["edit"] * edits + ["end"]
        for seg in traj.segments:
            last = traj.steps[seg.step_end - 1]
            assert seg.prompt_ids + seg.completion_ids == last.prompt_ids + last.completion_ids


def test_cli_rollout_records_scripted_tokens_that_segment_and_replay(tmp_path, tok):
    """`memgym rollout ENV --policy oracle --tokenizer smollm2`: token segments under SmolLM2's
    template (one per prune plus the last), saved and replayed exactly; an LLM policy with
    --tokenizer is refused."""
    from typer.testing import CliRunner

    from memgym import load_trajectories
    from memgym.cli import app
    from memgym.trajectory import trajectories_from_frame

    out = tmp_path / "oracle.parquet"
    args = ["rollout", MEMACT, "--policy", "oracle", "--episodes", "3", "--out", str(out)]
    assert CliRunner().invoke(app, [*args, "--tokenizer", "smollm2"]).exit_code == 0
    for traj in trajectories_from_frame(load_trajectories(out)):
        assert [s.end_reason for s in traj.segments] == ["edit", "end"]
        assert sum(traj.segments[1].loss_mask) == len(traj.segments[1].completion_ids)
        text = tok.decode(traj.segments[1].completion_ids, skip_special_tokens=True)
        assert text == traj.steps[-1].action
    assert CliRunner().invoke(app, ["replay", str(out), "--verify"]).exit_code == 0
    refused = CliRunner().invoke(app, [*args[:3], "smollm2", *args[4:], "--tokenizer", "smollm2"])
    assert isinstance(refused.exception, PolicyError) and "--tokenizer" in str(refused.exception)
