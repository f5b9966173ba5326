"""Optimizer-step time of memgym's GRPOTrainer vs TRL 1.16's GRPOTrainer on one batch.

Both train their own copy of SmolLM2-135M-Instruct (fp32, full fine-tuning, AdamW) on the same
single-turn batch (``--prompts`` prompts × ``--group`` completions, ``--prompt-len`` prompt and
``--completion-len`` completion tokens, GRPO ``loss_type="grpo"`` ↔ ``seq-mean-token-mean``,
no KL). TRL's step is what its ``training_step`` does after generation: ``compute_loss``,
backward, gradient clipping and its optimizer's step (fused AdamW, transformers' default;
memgym's trainer takes the fused AdamW too, and its logprobs skip right-padding and never
hold the full-vocabulary log-softmax, :func:`memgym.trainers.logprobs.completion_logprobs`).
Steps alternate (memgym, TRL, memgym, …) so load on the machine hits both alike; prints the
median of ``--repeats`` steps of each and the ratio memgym / TRL of the medians and of
the fastest steps (the least disturbed on a shared machine).

    OMP_NUM_THREADS=2 PYTHONPATH=. python experiments/bench/trainer_step.py --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch


def main() -> None:
    """Parse arguments, build both trainers, time alternating steps, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--completion-len", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer as TRLTrainer

    from memgym.rollouts.hf import load_model
    from memgym.trainers import GRPOConfig, GRPOTrainer, SegmentBatch
    from memgym.trajectory import Segment

    torch.manual_seed(0)
    model, tok = load_model("smollm2")
    size, plen, clen = args.prompts * args.group, args.prompt_len, args.completion_len
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, 20000, (args.prompts, plen), generator=g)
    completions = torch.randint(100, 20000, (size, clen), generator=g)
    lengths = torch.randint(clen // 2, clen + 1, (size,), generator=g)
    mask = (torch.arange(clen) < lengths[:, None]).long()
    advantages = torch.randn(size, generator=g)
    segments = [Segment(0, 0, 1, prompts[i // args.group].tolist(),
                        completions[i, :lengths[i]].tolist(), [1] * int(lengths[i]),
                        [0.0] * int(lengths[i]), "end") for i in range(size)]
    batch = SegmentBatch(segments, advantages)
    ours = GRPOTrainer(model, tok.pad_token_id, GRPOConfig(
        loss_agg_mode="seq-mean-token-mean", micro_batch=size, learning_rate=1e-6))

    with tempfile.TemporaryDirectory() as out:
        trl_args = TRLConfig(output_dir=out, use_cpu=True, per_device_train_batch_size=size,
                             num_generations=args.group, max_completion_length=clen, beta=0.0,
                             loss_type="grpo", learning_rate=1e-6, report_to="none",
                             bf16=False)
        trl = TRLTrainer(model=copy.deepcopy(model), args=trl_args,
                         reward_funcs=lambda completions, **_: [0.0] * len(completions),
                         train_dataset=Dataset.from_dict({"prompt": ["x"] * size}),
                         processing_class=tok)
    trl.create_optimizer()
    trl.current_gradient_accumulation_steps = 1  # set by Trainer's training loop, not run here
    inputs = {"prompt_ids": prompts.repeat_interleave(args.group, 0),
              "prompt_mask": torch.ones(size, plen, dtype=torch.long),
              "completion_ids": completions.masked_fill(mask == 0, tok.pad_token_id),
              "completion_mask": mask, "advantages": advantages,
              "num_items_in_batch": mask.sum()}

    def trl_step() -> None:
        trl.model.train()
        trl.optimizer.zero_grad(set_to_none=True)
        trl.compute_loss(trl.model, inputs).backward()
        torch.nn.utils.clip_grad_norm_(trl.model.parameters(), trl_args.max_grad_norm)
        trl.optimizer.step()

    times: dict[str, list[float]] = {"memgym": [], "trl": []}
    for _ in range(args.repeats + 1):  # the first step of each warms up (allocations, AdamW state)
        for name, step in (("memgym", lambda: ours.step(batch)), ("trl", trl_step)):
            tick = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - tick)
    med = {name: statistics.median(t[1:]) for name, t in times.items()}
    print(f"batch {size} samples ({args.prompts} prompts x {args.group}), prompt {plen} + "
          f"completion <= {clen} tokens, {torch.get_num_threads()} threads, "
          f"{args.repeats} timed steps each")
    for name in ("memgym", "trl"):
        print(f"{name:7s} step: median {med[name]:.3f} s  "
              f"(all: {', '.join(f'{t:.2f}' for t in times[name][1:])})")
    best = {name: min(t[1:]) for name, t in times.items()}  # least disturbed by other load
    print(f"ratio memgym / TRL: {med['memgym'] / med['trl']:.2f} (medians), "
          f"{best['memgym'] / best['trl']:.2f} (fastest steps)")


if __name__ == "__main__":
    main()
