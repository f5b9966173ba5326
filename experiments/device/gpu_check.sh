#!/usr/bin/env bash
# GPU check (issue 17, item 7): memgym's GRPO step beside a plain transformers bf16 training
# step on a random-initialised Qwen2.5-0.5B-shaped model, one GPU, gradient checkpointing off
# and on; prints tokens/s, MFU, peak memory and the memgym/plain ratio lines. < 5 min on an H200.
#
#   bash experiments/device/gpu_check.sh [gpu_check.py options]   (e.g. --device cpu --tiny)
#
# Needs python3 with torch, transformers and accelerate. memgym's other imports come from the
# wheels in .whl/ when present (Python 3.12, manylinux x86_64), installed into /tmp/site:
#   gymnasium 1.4.0, farama-notifications 0.0.6, bm25s 0.3.16, pydantic 2.14.3,
#   pydantic-core 2.50.4, annotated-types 0.8.0, typing-inspection 0.4.5,
#   typing-extensions 4.16.0, omegaconf 2.4.0
# fetched here with: python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12
#   --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
#   -d .whl <the names above, NAME==VERSION>      (.whl/ is git-ignored via .git/info/exclude)
# (GPU_CHECK_NO_WHEELS=1 skips them, e.g. in memgym's own venv.) memgym itself comes from
# this checkout through PYTHONPATH. memgym's step goes through FSDP2 (Accelerate) on one GPU
# under torchrun.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
if [ "${GPU_CHECK_NO_WHEELS:-0}" != 1 ] && compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# JAX (on the image, imported by bm25s) would otherwise take 75% of the GPU at first use.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false \
  JAX_PLATFORMS=cpu XLA_PYTHON_CLIENT_PREALLOCATE=false
exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 1 \
  experiments/device/gpu_check.py --fsdp2 "$@"
