#!/usr/bin/env bash
# bf16 MFU and tokens/s per device of a ~350M-parameter GPT on a TPU chip, at sequence 1024.
#
#   bash bench/tpu.sh            # on a TPU VM (e.g. v5e-8); JSON lines (one per measurement) + a table
#   STEPS=20 REMAT=full bash bench/tpu.sh
#
# The TPU twin of bench/gpu.sh: same model, same measurement, same entry point.
# Model: jaxformer.bench config M350 = GPT-2-medium shape (d_model 1024, 24 layers, 16 heads,
# vocab 50304, learned positions, tied head): 355M parameters, batch 16 x 1024 tokens, bf16
# compute with f32 parameters and AdamW state, scan over layers, dropout off (as in MaxText's MFU
# runs). The step runs on one chip (jax.devices()[0]), so tokens_per_s is tokens/s per device;
# on a v5e-8 the other 7 chips idle. MFU = flops_per_token (6 N + 12 L d T) x tokens/s, against
# (a) the bf16 jnp.dot peak measured in the same process and (b) the chip's nominal dense bf16
# peak (mfu_vs_nominal: 197 TFLOP/s on v5e, 275 on v4, 459 on v5p, 918 on v6e), which is how
# MaxText reports it.
# Memory: parameters + AdamW state are 16 bytes x 355M = 5.7 GB; a v5e chip has 16 GB of HBM, so
# the activations of 16 x 1024 tokens x 24 layers may not fit without rematerialisation: if the
# step runs out of memory, rerun with REMAT=full (or REMAT=dots).
#
# Budget: compile of the scanned 24-layer step takes about a minute; 10 timed steps take seconds.
# The timeout below stops a hang at 7.5 minutes.
#
# Environment: uses $PYTHON (default: the repo's .venv, else python3) if its jax already sees a
# TPU; otherwise creates .venv-tpu (git-ignored) and installs jax[tpu] with jaxformer's model
# dependencies (needs network access to the package index).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

has_tpu() { "$1" -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'tpu' else 1)" 2>/dev/null; }

if ! has_tpu "$PY"; then
  echo "[tpu.sh] $PY has no TPU jax; installing jax[tpu] into .venv-tpu" >&2
  [ -x .venv-tpu/bin/python ] || python3 -m venv .venv-tpu
  .venv-tpu/bin/pip install -q "jax[tpu]==0.10.2" flax==0.12.8 optax==0.2.8 numpy ml_collections
  .venv-tpu/bin/pip install -q --no-deps -e .
  PY=.venv-tpu/bin/python
  has_tpu "$PY" || { echo "[tpu.sh] jax still sees no TPU (is this a TPU VM?)" >&2; exit 1; }
fi

"$PY" -c "import jax; d = jax.devices(); print(f'{len(d)} x {d[0].device_kind}')" >&2

timeout 450 "$PY" -m jaxformer.bench --config M350 --only train --steps "${STEPS:-10}" --warmup 3 \
  --set remat="${REMAT:-none}"
