"""One rank of tests/test_distributed.py: GRPO steps through memgym.trainers.distributed.

Run by ``torchrun --nproc_per_node N tests/distributed_worker.py STRATEGY OUT`` (or with
``STRATEGY none`` in one plain process for the reference). Writes ``OUT/result.pt`` (rank 0):
the metrics of each step and the full parameters after the first step and after each run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from memgym.batch import RolloutBatch
from memgym.config.trainer import GRPOConfig, PPOConfig
from memgym.trainers.grpo import GRPOTrainer, SegmentBatch
from memgym.trainers.ppo import PPOTrainer
from memgym.trajectory import Segment, Step, Trajectory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.tiny_models import tiny_llama

VOCAB = 12


def segment_batch(seed: int) -> SegmentBatch:
    """7 segments of 4 trajectories, ragged prompts and completions, mixed advantages, a
    padded loss mask; sampler logprobs so that the mismatch metrics are on."""
    g = torch.Generator().manual_seed(seed)
    segments, owner = [], []
    for k in range(7):
        p, c = 2 + k % 3, 3 + (k * 5) % 4
        prompt = torch.randint(1, VOCAB, (p,), generator=g).tolist()
        completion = torch.randint(1, VOCAB, (c,), generator=g).tolist()
        mask = [1] * c if k % 3 else [1] * (c - 1) + [0]
        logprobs = (-torch.rand(c, generator=g, dtype=torch.float64) * 3).tolist()
        segments.append(Segment(k, 0, 1, prompt, completion, mask, logprobs, "end"))
        owner.append(k // 2)
    adv = torch.randn(7, generator=g)
    return SegmentBatch(segments, adv, torch.tensor(owner), temperature=0.8)


def ppo_trajectories(seed: int) -> list[Trajectory]:
    """3 trajectories of 2 one-step segments each, rewards on the last token."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(3):
        steps, segments = [], []
        for s in range(2):
            completion = torch.randint(1, VOCAB, (3,), generator=g).tolist()
            prompt = torch.randint(1, VOCAB, (2 + s,), generator=g).tolist()
            steps.append(Step(s, f"o{s}", "a", reward=float(torch.rand(1, generator=g)),
                              terminated=s == 1, prompt_ids=prompt, completion_ids=completion))
            segments.append(Segment(s, s, s + 1, prompt, completion, [1, 1, 1], [], "end"))
        out.append(Trajectory("e", t, {}, "tiny", steps, group=t, segments=segments))
    return out


def full_params(dist, model) -> dict[str, torch.Tensor]:
    """Every parameter, unsharded, on the CPU (rank 0 gets them all)."""
    if dist is None:
        return {k: v.detach().clone() for k, v in model.named_parameters()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    return {k: v.detach().clone() for k, v in state.items()}


def main(strategy: str, out: Path) -> None:
    """GRPO: a one-update step, a sharded checkpoint, a second step; a fresh trainer (other
    weights) resumed from the checkpoint takes the same second step; a 2-update step. PPO:
    one step of 2 mini-batches."""
    dist = None
    if strategy != "none":
        from memgym.trainers.distributed import Distributed
        from memgym.trainers.sharded_checkpoint import (
            load_sharded_checkpoint,
            save_sharded_checkpoint,
        )
        dist = Distributed(strategy, backend="gloo", use_gpu=False)
    config = GRPOConfig(micro_batch=2, learning_rate=0.05, max_grad_norm=0.5,
                        loss_agg_mode="seq-mean-token-mean")
    result: dict = {"world_size": 1 if dist is None else dist.world_size}
    trainer = GRPOTrainer(tiny_llama(VOCAB), 0, config, distributed=dist)
    result["step1"] = trainer.step(segment_batch(1))
    result["params1"] = full_params(dist, trainer.model)
    if dist is not None:
        save_sharded_checkpoint(out / "checkpoint", dist, trainer, state={"iteration": 1})
    result["step2"] = trainer.step(segment_batch(2))
    if dist is not None:
        resumed = GRPOTrainer(tiny_llama(VOCAB, seed=5), 0, config, distributed=dist)
        loop = load_sharded_checkpoint(out / "checkpoint", dist, resumed)
        result["resumed_iteration"] = loop["iteration"]
        result["resumed_step2"] = resumed.step(segment_batch(2))
        result["resumed_params"] = full_params(dist, resumed.model)
    result["params2"] = full_params(dist, trainer.model)
    several = GRPOTrainer(tiny_llama(VOCAB), 0, config.model_copy(update={"grad_accum": 1}),
                          distributed=dist)
    result["several"] = several.step(segment_batch(3))
    result["several_params"] = full_params(dist, several.model)
    result["sharded"] = any(isinstance(p, DTensor) for p in trainer.model.parameters())
    ppo = PPOTrainer(tiny_llama(VOCAB), 0,
                     PPOConfig(micro_batch=2, grad_accum=1, learning_rate=1e-3),
                     distributed=dist)
    result["ppo"] = ppo.step(RolloutBatch(ppo_trajectories(4)))
    result["ppo_params"] = full_params(dist, ppo.model)
    if dist is None or dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(result, out / "result.pt")
    if dist is not None:
        dist.barrier()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], Path(sys.argv[2]))
