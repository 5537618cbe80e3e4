#!/usr/bin/env bash
# bf16 MFU of a ~350M-parameter GPT on ONE GPU, at sequence length 1024.
#
#   bash bench/gpu.sh            # from anywhere; prints JSON lines (one per measurement) + a table
#
# Model: jaxformer.bench config M350 = GPT-2-medium shape (d_model 1024, 24 layers, 16 heads,
# vocab 50304, learned positions, tied head): 355M parameters, batch 16 x 1024 tokens, bf16
# compute with f32 parameters and AdamW state, scan over layers, cuDNN flash attention
# (attention_impl='auto' picks it for bf16 on GPU), dropout off (as in MaxText's MFU runs).
# MFU = flops_per_token (6 N + 12 L d T) x tokens/s, against (a) the bf16 jnp.dot peak measured
# in the same process and (b) the GPU's nominal dense bf16 peak (989 TFLOP/s on H100/H200),
# which is how MaxText reports it. Target on H100/H200: >= 50% MFU vs nominal.
#
# Budget: the whole script must finish inside 8 minutes, compile included. Compile of the
# scanned 24-layer step takes well under a minute; 10 timed steps take seconds. The timeout
# below is a hard stop at 7.5 minutes so that a hang cannot overrun.
#
# Environment: uses $PYTHON (default: the repo's .venv, else python3) if its jax already sees a
# GPU; otherwise creates .venv-gpu (git-ignored) and installs jax[cuda12] with jaxformer's
# model dependencies (needs network access to the package index).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

has_gpu() { "$1" -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 1)" 2>/dev/null; }

if ! has_gpu "$PY"; then
  echo "[gpu.sh] $PY has no GPU jax; installing jax[cuda12] into .venv-gpu" >&2
  [ -x .venv-gpu/bin/python ] || python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install -q "jax[cuda12]==0.10.2" flax==0.12.8 optax==0.2.8 numpy ml_collections
  .venv-gpu/bin/pip install -q --no-deps -e .
  PY=.venv-gpu/bin/python
  has_gpu "$PY" || { echo "[gpu.sh] jax still sees no GPU (nvidia-smi: $(nvidia-smi -L 2>&1 | head -1))" >&2; exit 1; }
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
# XLA flags that MaxText uses on GPU for dense transformer training.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_enable_triton_gemm=false"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"

timeout 450 "$PY" -m jaxformer.bench --config M350 --only train --steps "${STEPS:-10}" --warmup 3
