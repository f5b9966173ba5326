"""GPU check (issue 17, item 7): memgym's GRPO step beside a plain transformers training step.

A random-initialised model with Qwen2.5-0.5B's sizes (``transformers.Qwen2Config``, no weights
fetched), bf16, sdpa, on one GPU. For gradient checkpointing off and on, in one run, each on a
fresh model and AdamW (fused):

- **plain**: a transformers training step, forward, fp32 log-softmax over the full vocabulary
  at the completion positions, ``-(logp · advantage).mean()``, backward, AdamW step;
- **memgym**: :meth:`memgym.trainers.grpo.GRPOTrainer.step` on the same tokens (``--batch``
  segments of ``--prompt-len`` prompt + ``--seq - --prompt-len`` completion tokens, one
  micro-batch, one update), through :class:`memgym.trainers.distributed.Distributed`
  (``fsdp2``) when launched by ``torchrun`` with ``--fsdp2`` (what ``gpu_check.sh`` does),
  else the plain trainer in this process;

printing tokens/s (``batch·seq / step time``, median of ``--steps`` timed steps after one
warm-up), model FLOP utilisation ``6·N·tokens / time / 989e12`` (N: parameters, the tied
embedding counted once; H200 dense bf16 spec) and peak memory
(``torch.cuda.max_memory_allocated``), then the issue's criteria as ratio lines: memgym
tokens/s ≥ 0.9× plain, memgym peak memory ≤ plain.

Needs torch, transformers and accelerate; memgym's import chain (``import memgym`` registers
the gymnasium environments) also needs, as wheels for Python 3.12 that ``gpu_check.sh``
installs from ``.whl/``: gymnasium 1.4.0, farama-notifications 0.0.6, bm25s 0.3.16,
pydantic 2.14.3, pydantic-core 2.50.4, annotated-types 0.8.0, typing-inspection 0.4.5,
typing-extensions 4.16.0, omegaconf 2.4.0.

    bash experiments/device/gpu_check.sh                 # on the GPU machine (< 5 minutes)
    python experiments/device/gpu_check.py --device cpu --tiny   # smoke test, any machine
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

H200_BF16_FLOPS = 989e12  # dense bf16 tensor-core spec


def model_config(tiny: bool) -> Qwen2Config:
    """Qwen2.5-0.5B's sizes (or a tiny model of the same shape family for a smoke test)."""
    if tiny:
        return Qwen2Config(vocab_size=1024, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=2048, tie_word_embeddings=True)
    return Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                       num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                       max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                       tie_word_embeddings=True)


def new_model(config: Qwen2Config, device: torch.device, dtype: torch.dtype,
              checkpointing: bool) -> torch.nn.Module:
    """A random-initialised causal LM on ``device`` in ``dtype``, in train mode."""
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    if checkpointing:  # transformers ≥ 5.2x renamed it; 5.17 has only the old name
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable({"use_reentrant": False})
    return model.train()


def time_steps(step: Callable[[], None], steps: int, device: torch.device
               ) -> tuple[float, float | None]:
    """(median seconds per step after one warm-up step, peak GiB or None on CPU)."""
    cuda = device.type == "cuda"
    step()  # warm-up: AdamW state, kernels' autotuning
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        tick = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tick)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return statistics.median(times), peak


def plain_run(config, device, dtype, checkpointing, ids, completion, advantages, steps):
    """Median step time and peak memory of the plain transformers training step."""
    model = new_model(config, device, dtype, checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=device.type == "cuda")
    targets = ids[:, ids.shape[1] - completion:]

    def step() -> None:
        logits = model(input_ids=ids, logits_to_keep=completion + 1).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None])[..., 0]
        (-(logp * advantages[:, None]).mean()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return time_steps(step, steps, device)


def memgym_run(config, device, dtype, checkpointing, ids, completion, advantages, steps,
               distributed, profile=False):
    """Median step time and peak memory of memgym's GRPO step on the same tokens; with
    ``profile``, then one more step under ``torch.profiler``, its top operators printed."""
    from memgym.config.trainer import GRPOConfig
    from memgym.trainers.grpo import GRPOTrainer, SegmentBatch
    from memgym.trajectory import Segment

    model = new_model(config, device, dtype, checkpointing)
    rows = ids.tolist()
    prompt = ids.shape[1] - completion
    segments = [Segment(i, 0, 1, row[:prompt], row[prompt:], [1] * completion,
                        [0.0] * completion, "end") for i, row in enumerate(rows)]
    batch = SegmentBatch(segments, advantages.float().cpu())
    grpo = GRPOConfig(micro_batch=len(rows), learning_rate=1e-6, max_grad_norm=1e9)
    trainer = GRPOTrainer(model, 0, grpo, distributed=distributed)
    figures = time_steps(lambda: trainer.step(batch), steps, device)
    if profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            trainer.step(batch)
        key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))
    return figures


def main() -> None:
    """Parse arguments, run both steps with checkpointing off and on, print figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="a tiny model (smoke test)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="profile one memgym step (checkpointing off) and print its top ops")
    parser.add_argument("--fsdp2", action="store_true",
                        help="memgym's step through Distributed('fsdp2') (under torchrun)")
    args = parser.parse_args()
    if not 1 <= args.prompt_len < args.seq:
        parser.error(f"--prompt-len must be in [1, --seq), got {args.prompt_len}")

    distributed = None
    if args.fsdp2:
        from memgym.trainers.distributed import Distributed
        distributed = Distributed("fsdp2", use_gpu=args.device == "cuda")
        device = distributed.device
    else:
        device = torch.device(args.device)
    main_rank = distributed is None or distributed.is_main
    dtype = torch.bfloat16
    config = model_config(args.tiny)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, config.vocab_size, (args.batch, args.seq), generator=g).to(device)
    advantages = torch.randn(args.batch, generator=g).to(device)
    completion = args.seq - args.prompt_len
    tokens = args.batch * args.seq
    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    if main_rank:
        gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
        route = ("GRPOTrainer in this process" if distributed is None else
                 f"Distributed('fsdp2'), world {distributed.world_size}, Accelerate FSDP2 "
                 f"{distributed.accelerator.is_fsdp2}")
        print(f"gpu_check: {gpu}, torch {torch.__version__}, Qwen2 {params / 1e6:.0f}M params "
              f"(random init), {dtype}, sdpa, {args.batch}x{args.seq} tokens (prompt "
              f"{args.prompt_len} + completion {completion}), median of {args.steps} steps; "
              f"memgym through {route}", flush=True)
    for checkpointing in (False, True):
        figures = {}
        for name in ("plain", "memgym"):
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if name == "plain":
                seconds, peak = plain_run(config, device, dtype, checkpointing, ids, completion,
                                          advantages, args.steps)
            else:
                seconds, peak = memgym_run(config, device, dtype, checkpointing, ids,
                                           completion, advantages, args.steps, distributed,
                                           args.profile and not checkpointing and main_rank)
            figures[name] = (tokens / seconds, peak)
            if main_rank:
                mfu = 6 * params * tokens / seconds / H200_BF16_FLOPS
                memory = "n/a" if peak is None else f"{peak:.1f} GiB"
                print(f"checkpointing {'on ' if checkpointing else 'off'} {name:6s}: "
                      f"{tokens / seconds:9.0f} tokens/s  step {seconds * 1e3:8.1f} ms  "
                      f"MFU {mfu:6.1%}  peak {memory}")
        if main_rank:
            speed = figures["memgym"][0] / figures["plain"][0]
            line = (f"ratio checkpointing {'on ' if checkpointing else 'off'}: memgym/plain "
                    f"tokens/s {speed:.2f} ({'PASS' if speed >= 0.9 else 'FAIL'} >= 0.9)")
            if figures["plain"][1] is not None:
                memory = figures["memgym"][1] / figures["plain"][1]
                line += (f", peak memory {memory:.2f} "
                         f"({'PASS' if memory <= 1.0 else 'FAIL'} <= 1.0)")
            print(line, flush=True)
    if distributed is not None and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
