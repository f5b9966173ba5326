"""The run configuration of ``memgym train``: the model, LoRA, sampling, distribution and the
top-level :class:`TrainConfig` that holds every section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from memgym.config.base import Section
from memgym.config.rollout import RolloutConfig
from memgym.config.trainer import GRPOConfig, PPOConfig

DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
                 "float": "float32"}


class ModelConfig(Section):
    """The policy model (the ``model:`` section; a plain string is its ``name_or_path``).

    Attributes:
        name_or_path: ``"smollm2"`` (the SmolLM2-135M-Instruct that ships with memgym), a
            local model directory (e.g. the output of ``memgym sft``: a warm start) or a
            Hugging Face id (loaded by transformers: from its cache, or downloaded where the
            machine may). The KL reference, if any, is this model.
        dtype: Weights and compute dtype: ``float32`` | ``bfloat16`` | ``float16`` (``fp32`` /
            ``bf16`` / ``fp16`` are accepted) or ``auto`` (the checkpoint's own).
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``. Under
            ``accelerate launch`` / ``torchrun`` each process uses its own local GPU.
        gradient_checkpointing: Recompute activations in the backward pass (transformers'
            ``gradient_checkpointing_enable``): less memory, ~30% more compute.
        attn_implementation: transformers' attention backend (``sdpa``, ``eager``,
            ``flash_attention_2``, ...); None: transformers' default.
        fast_path: Let the HF engine use its CPU decoding fast path (prepacked linears, an
            in-place KV cache, a shared-prefix prefill) where it is valid: CPU, float32 and an
            attention it reproduces. False: always plain ``generate``.
    """

    name_or_path: str = "smollm2"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    fast_path: bool = True

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_alias(cls, value):
        return DTYPE_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        kind, _, index = value.partition(":")
        if kind not in ("auto", "cpu", "cuda") or (index and not (kind == "cuda"
                                                                  and index.isdigit())):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value


class DistributedConfig(Section):
    """Data-parallel or sharded training (the ``distributed:`` section), through Accelerate.

    The processes come from the launcher: ``accelerate launch`` or ``torchrun`` on one node
    (``python -m memgym train ...`` as the program), Ray on a cluster (``launcher: ray``). Each
    process runs its share of the batch's rollouts, and the trainer's gradients are averaged
    across processes by the strategy's own collectives.

    Attributes:
        strategy: ``none`` (one process), ``ddp`` (PyTorch DistributedDataParallel), ``fsdp2``
            (PyTorch FSDP2, ``fully_shard``: parameters, gradients and optimizer state
            sharded).
        launcher: ``torchrun`` (processes started by ``accelerate launch`` / ``torchrun``) or
            ``ray`` (``memgym train`` starts ``num_workers`` Ray Train workers that form one
            torch.distributed group).
        num_workers: Processes a ``ray`` launcher starts.
        use_gpu: Train each process on its GPU (and give each Ray worker one); None: when
            CUDA is available.
        backend: torch.distributed backend; None: NCCL on GPUs, gloo on CPU.
        mixed_precision: ``no`` | ``bf16`` | ``fp16`` (Accelerate's): with ``model.dtype``
            float32 the master weights and AdamW state stay float32 while forward and backward
            run in the lower precision, as peers train (pure bf16 weights lose updates of
            lr 1e-6 to rounding). A LoRA model may load in bf16: peft keeps adapters float32.
    """

    strategy: Literal["none", "ddp", "fsdp2"] = "none"
    launcher: Literal["torchrun", "ray"] = "torchrun"
    num_workers: int = Field(1, ge=1)
    use_gpu: bool | None = None
    backend: Literal["nccl", "gloo"] | None = None
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"


class LoraConfig(Section):
    """peft LoRA settings (peft's ``LoraConfig`` names).

    Attributes:
        r: Adapter rank.
        alpha: Scale numerator (the update is scaled by ``alpha / r``).
        dropout: Dropout on the adapter's input.
        target_modules: Module names that get adapters.
        layers_to_transform: Decoder layer indices that get adapters (None: all). With the
            lower layers frozen and gradient checkpointing off, the backward pass stops at the
            lowest adapted layer.
    """

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    layers_to_transform: list[int] | None = None


class WarmStartConfig(Section):
    """SFT warm start before RL: the policy imitates a scripted teacher's actions on training
    episodes (seeds disjoint from the RL and validation seeds), loss on the actions only.
    With ``lora:`` the SFT trains the run's adapters (the ones RL then continues), and
    ``run_dir/warm_start`` holds the adapter.

    Attributes:
        policy: A scripted baseline of the env (``memgym envs`` lists them), e.g. a privileged
            teacher; its trajectories are rollouts of the training ``env``.
        episodes: Teacher episodes (each step is one example).
        epochs: Passes over the examples.
        learning_rate: AdamW learning rate (the schedule's peak).
        lr_scheduler: ``"constant"``, or ``"linear"`` / ``"cosine"`` decay to 0 (transformers'
            ``lr_scheduler_type``, no warmup).
        batch_size: Examples per optimizer step.
        micro_batch: Examples per forward / backward pass (None: ``batch_size``); the
            ``batch_size / micro_batch`` passes of a step accumulate their gradients (TRL's
            ``gradient_accumulation_steps``). Peak memory scales with it: TRL holds each
            pass's full-vocabulary logits (~140 MB per 700-token SmolLM2 example, several
            copies).
        balance: Keep as many steps of each kind of action (its ops' kinds: none, ADD, UPDATE,
            ...) as of the rarest (an imitator of a teacher that mostly writes nothing, or
            rarely swaps a memory, learns never to; :func:`~memgym.trainers.warm_start.balanced`).
        bf16: SFT under bfloat16 autocast, float32 master weights; ``"auto"``: where the CPU
            has native bf16 (AMX / AVX512-BF16; see :class:`~memgym.trainers.sft.SFTSettings`).
        pad_to_multiple_of: Pad each pass's examples to a multiple of this many tokens (TRL's
            ``pad_to_multiple_of``; None: to the longest). Under bf16 autocast on a CPU,
            oneDNN caches primitives per matmul shape and keeps them after the SFT: with every
            length its own shape, 48 of the quickstart's examples left 0.66 GB behind, padded
            to 64 tokens 0.06 GB (README).
    """

    policy: str
    episodes: int = Field(32, ge=1)
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    batch_size: int = Field(8, ge=1)
    micro_batch: int | None = Field(None, ge=1)
    balance: bool = False
    bf16: bool | Literal["auto"] = False
    pad_to_multiple_of: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _micro_batch_divides(self):
        if self.micro_batch is not None and self.batch_size % self.micro_batch:
            raise ValueError(f"warm_start.micro_batch ({self.micro_batch}) must divide "
                             f"warm_start.batch_size ({self.batch_size})")
        return self


SERVED = "served:"  # an env ``answerer`` naming a served reader (memgym.envs.answer_server)


def served_names(kwargs: dict) -> set[str]:
    """The served readers that env kwargs name (``answerer: served:<name>``)."""
    answerer = kwargs.get("answerer")
    if isinstance(answerer, str) and answerer.startswith(SERVED):
        return {answerer[len(SERVED):]}
    return set()


class ReaderConfig(Section):
    """A frozen LLM answer agent served to the envs (the ``reader:`` section): Memory-R1's
    reward, the EM / F1 of a frozen reader after the ops, affordable in training. ``memgym
    train`` loads the model once (apart from the policy: it is never trained), wraps it in an
    :class:`~memgym.envs.answer_server.AnswerServer` (greedy, micro-batched across the envs
    stepped together, LRU-cached) and registers it as ``name`` before any env is built; env
    kwargs name it as ``answerer: served:<name>``. It serves training rollouts, the warm start
    and every evaluation, and is unregistered when the run ends.

    Attributes:
        name: The name env kwargs give it (``answerer: served:<name>``).
        model: The reader model (:class:`ModelConfig`; a plain string sets only its
            ``name_or_path``), loaded as a copy of its own.
        engine: ``hf`` (transformers, in-process), ``vllm`` (``vllm.LLM`` in-process) or
            ``openai`` (an OpenAI-compatible server at ``base_url`` serving ``model``).
        engine_kwargs: Extra constructor arguments of the engine
            (:func:`memgym.rollouts.engines.make_engine`), e.g. vLLM's
            ``gpu_memory_utilization`` so that it shares the card with the policy's engine.
        base_url: The server of the ``openai`` engine.
        max_new_tokens: Generation budget of an answer (greedy decoding).
        max_batch: Most prompts per engine call (also the ``hf`` engine's batch size).
        batch_wait_timeout_s: Longest wait (seconds) for a batch to fill.
        cache_size: Completions kept in the LRU cache (0: none).
        metric: Score of an answer against the gold ones: ``f1`` (token F1) or ``em``.
        step_threads: Threads that step the envs of a tick, so the envs whose episodes end
            together send their questions as one batch; None: ``num_envs``.
    """

    name: str = Field("llm", min_length=1)
    model: ModelConfig = ModelConfig()
    engine: Literal["hf", "vllm", "openai"] = "hf"
    engine_kwargs: dict = Field(default_factory=dict)
    base_url: str | None = None
    max_new_tokens: int = Field(48, ge=1)
    max_batch: int = Field(64, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    cache_size: int = Field(4096, ge=0)
    metric: Literal["f1", "em"] = "f1"
    step_threads: int | None = Field(None, ge=1)

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value):
        return {"name_or_path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _engine_consistent(self):
        if (self.engine == "openai") != (self.base_url is not None):
            raise ValueError("reader.base_url is the openai engine's server: set both or "
                             f"neither (engine {self.engine!r}, base_url {self.base_url!r})")
        return self


class SamplingConfig(Section):
    """Sampling during training rollouts (evaluation decodes greedily)."""

    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.7, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)


class TrainConfig(Section):
    """Everything ``memgym train`` needs; see ``experiments/quickstart.yaml``.

    Attributes:
        run_dir: Output directory.
        env_id: Registered env id.
        env: ``gymnasium.make`` kwargs for training episodes.
        eval_env: kwargs overriding ``env`` for evaluation (e.g. ``split: val``).
        model: The policy model, its dtype and device (:class:`ModelConfig`; a plain string
            sets only ``model.name_or_path``).
        lora: LoRA settings, or None for full fine-tuning.
        algorithm: ``grpo`` (the ``grpo:`` section applies) or ``ppo`` (``ppo:``: a critic
            initialized from the policy, GAE across segments; full fine-tuning only).
        iterations: Optimizer steps (one batch of rollouts each).
        episodes_per_iteration: Distinct episode seeds per batch.
        group_size: Rollouts per seed (the GRPO group).
        num_envs: Envs stepped together (generation batch).
        eval_episodes: Episodes per policy in each evaluation.
        seed: Master seed.
        eval_every: Evaluate the policy (greedy, on ``eval_env``) every this many iterations;
            0: only before and after training.
        checkpoint_every: Save ``run_dir/checkpoint`` every this many iterations (it is always
            saved at the end); 0: only at the end.
        resume: Continue from ``run_dir/checkpoint`` when it exists: model (or adapter),
            optimizer, trainer step, RNG states, metrics and trajectories so far, so the run
            continues exactly as if it had not stopped.
        overwrite: Delete what an earlier run left in ``run_dir`` and start afresh; without
            it (or ``resume``) a ``run_dir`` that holds a run is refused.
        tensorboard: Also log every metric to ``run_dir/tensorboard`` (TensorBoard).
        rollout: The engine (``hf`` / ``vllm`` / ``openai``), weight sync, asynchrony and
            where rollouts run: ``rollout.ray_address`` None (default) keeps the local runner;
            ``local`` / ``auto`` / ``ray://…`` uses the Ray runner
            (:class:`memgym.config.rollout.RolloutConfig`).
        distributed: Data-parallel / sharded training (:class:`DistributedConfig`).
        warm_start: SFT on a scripted teacher's rollouts after the baselines and the untrained
            policy are evaluated, before RL (:class:`WarmStartConfig`); None: none. The KL
            reference stays the untrained model.
        reader: A frozen LLM answer agent served to the envs, which name it with
            ``answerer: served:<reader.name>`` in ``env`` / ``eval_env``
            (:class:`ReaderConfig`); None: none (the envs' own answerers).
    """

    run_dir: str = "runs/quickstart"
    env_id: str = "memgym/LoCoMoMemoryManager-v0"
    env: dict = Field(default_factory=dict)
    eval_env: dict = Field(default_factory=lambda: {"split": "val"})
    model: ModelConfig = ModelConfig()
    lora: LoraConfig | None = None
    algorithm: Literal["grpo", "ppo"] = "grpo"
    iterations: int = Field(10, ge=0)
    episodes_per_iteration: int = Field(4, ge=1)
    group_size: int = Field(4, ge=2)
    num_envs: int = Field(16, ge=1)
    eval_episodes: int = Field(16, ge=1)
    seed: int = 0
    eval_every: int = Field(0, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    resume: bool = False
    overwrite: bool = False
    tensorboard: bool = True
    sampling: SamplingConfig = SamplingConfig()
    grpo: GRPOConfig = GRPOConfig()
    ppo: PPOConfig = PPOConfig()
    rollout: RolloutConfig = RolloutConfig()
    distributed: DistributedConfig = DistributedConfig()
    warm_start: WarmStartConfig | None = None
    reader: ReaderConfig | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value):
        return {"name_or_path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _ppo_consistent(self):
        if self.algorithm == "ppo" and self.lora is not None:
            raise ValueError("algorithm 'ppo' builds its critic from a plain policy: remove lora")
        if self.rollout.ray_address is not None and self.lora is not None:
            raise ValueError("Ray rollouts send full weights to the engine actors: remove lora "
                             "or rollout.ray_address")
        trainer = self.ppo if self.algorithm == "ppo" else self.grpo
        if self.rollout.max_staleness > 0 and (trainer.behaviour_logprobs == "trainer"
                                               and trainer.tis_cap is None):
            raise ValueError(f"asynchronous rollouts (rollout.max_staleness "
                             f"{self.rollout.max_staleness}) are off-policy: correct for it with "
                             f"{self.algorithm}.behaviour_logprobs 'sampler' or "
                             f"{self.algorithm}.tis_cap")
        if self.distributed.strategy == "fsdp2" and self.lora is not None:
            raise ValueError("a sharded LoRA model's weights carry peft names that no engine "
                             "loads yet: use distributed.strategy 'ddp' for LoRA runs")
        if self.distributed.strategy != "none" and self.rollout.ray_address is not None:
            raise ValueError("distributed training rolls out on each rank's own engine: "
                             "remove rollout.ray_address (or distributed.strategy)")
        if self.warm_start is not None and self.distributed.strategy != "none":
            raise ValueError("warm_start fine-tunes the model in one process: remove "
                             "distributed.strategy, or warm-start with `memgym sft`")
        if self.rollout.engine == "openai":
            raise ValueError("rollout.engine 'openai' serves weights memgym cannot update: "
                             "train with 'hf' or 'vllm' (openai is for rollout and eval)")
        return self._reader_consistent()

    def _reader_consistent(self):
        """The served reader the env kwargs name is the ``reader:`` section's, in this
        process."""
        named = served_names(self.env) | served_names({**self.env, **self.eval_env})
        if served_names(self.env) and self.rollout.ray_address is not None:
            raise ValueError(f"env answerer 'served:{min(served_names(self.env))}' is a reader "
                             "of this process, and Ray env workers run in others: remove "
                             "rollout.ray_address or use another answerer")
        if self.reader is None:  # a Python caller may have registered it (register_reader)
            return self
        if self.rollout.ray_address is not None or self.distributed.strategy != "none":
            raise ValueError("reader: serves the envs of this process only; remove "
                             "rollout.ray_address and distributed.strategy (or the reader)")
        stray = sorted(named - {self.reader.name})
        if stray:
            name = stray[0]
            raise ValueError(f"env / eval_env answerer 'served:{name}' names no reader of "
                             f"this run: reader.name is {self.reader.name!r} (set answerer: "
                             f"served:{self.reader.name}, or reader.name: {name})")
        return self

    def env_step_threads(self) -> int:
        """Threads that step the envs of a tick: with a ``reader``, its ``step_threads`` (None:
        ``num_envs``); without one, 1 (one after another)."""
        if self.reader is None:
            return 1
        return self.reader.step_threads or self.num_envs

    def needs_reference(self) -> bool:
        """Whether the algorithm's KL terms need a frozen reference model."""
        if self.algorithm == "ppo":
            return self.ppo.kl_coef > 0 or self.ppo.kl_loss_coef > 0
        return self.grpo.beta > 0

