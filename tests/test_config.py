"""Run configs: dotted overrides merge into nested sections, unknown keys are refused with the
nearest valid name, and parsing imports neither torch nor the trainers."""

import subprocess
import sys
from pathlib import Path

import pytest

from memgym.config import load_config, parse_overrides
from memgym.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def test_dotted_overrides_merge_into_their_sections():
    base = load_config(QUICKSTART)
    config = load_config(QUICKSTART, ["grpo.learning_rate=1e-6", "rollout.engine=vllm",
                                      "model.dtype=bf16", "env.split=val", "iterations=3",
                                      "lora.alpha=64"])
    assert config.grpo.learning_rate == 1e-6 and config.rollout.engine == "vllm"
    # the sections' other keys stay as the file set them
    assert config.grpo.model_dump(exclude={"learning_rate"}) == base.grpo.model_dump(
        exclude={"learning_rate"})
    assert config.env == {**base.env, "split": "val"} and config.iterations == 3
    assert config.model == base.model.model_copy(update={"dtype": "bfloat16"})
    assert (config.lora.alpha, config.lora.r) == (64, 16)  # the file's r (default 8) stays


def test_a_model_name_is_shorthand_for_its_path():
    config = load_config(QUICKSTART, {"model": "runs/sft", "model.dtype": "fp16"})
    assert (config.model.name_or_path, config.model.dtype) == ("runs/sft", "float16")
    assert load_config(None, ["model=org/name"]).model.name_or_path == "org/name"


@pytest.mark.parametrize(("override", "message"), [
    ("grpo.learnin_rate=1e-6", "unknown key grpo.learnin_rate: did you mean grpo.learning_rate?"),
    ("rollot.engine=vllm", "unknown key rollot: did you mean rollout?"),
    ("model.dtyp=bf16", "did you mean model.dtype?"),
    ("rollout.engine=sglang", "rollout.engine: Input should be 'hf', 'vllm' or 'openai'"),
    ("model.device=tpu", "device must be auto, cpu, cuda or cuda:N"),
    ("grpo.estimator=best", "grpo.estimator"),
])
def test_bad_keys_and_values_are_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace(".", r"\.")):
        load_config(QUICKSTART, [override])


def test_malformed_overrides_and_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["grpo.learning_rate"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_overrides(["env={a: ["])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping at top level"):
        load_config(tmp_path / "list.yaml")


def test_the_openai_engine_serves_rollouts_not_training():
    with pytest.raises(ConfigError, match="cannot update"):
        load_config(None, ["rollout.engine=openai", "rollout.base_url=http://x/v1"])
    with pytest.raises(ConfigError, match="base_url"):
        load_config(None, ["rollout.engine=openai"])


def test_parsing_a_config_imports_neither_torch_nor_the_trainers():
    code = ("import sys; from memgym.config import load_config; "
            f"load_config({str(QUICKSTART)!r}, ['grpo.learning_rate=1e-6']); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'transformers')"
            " or m.startswith('memgym.trainers')]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_python_m_memgym_is_the_memgym_command():
    done = subprocess.run([sys.executable, "-m", "memgym", "train", str(QUICKSTART), "--set",
                           "grpo.learnin_rate=1"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "did you mean grpo.learning_rate?" in done.stdout


@pytest.mark.parametrize(("overrides", "message"), [
    (["distributed.strategy=fsdp2", "lora.r=8"], "use distributed.strategy 'ddp'"),
    (["distributed.strategy=ddp", "rollout.ray_address=local", "lora=null"],
     "remove rollout.ray_address"),
    (["rollout.ray_address=local"], "remove lora or rollout.ray_address"),
    (["distributed.strategy=deepspeed"], "distributed.strategy"),
    (["rollout.max_staleness=1"], "off-policy"),
])
def test_combinations_that_cannot_run_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(QUICKSTART, overrides)
