"""jaxformer as a plug-in peer of the shared peer benchmark (../shared/bench/peers_bench.py).

Run from the repository root, in the peers' own virtual environment (never jaxformer's):
    .venv-peers/bin/python ../shared/bench/peers_bench.py --config S \
        --which torch_eager,flax_hf --extra bench.jaxformer_peer:make_peer --threads 1

peers_bench imports `bench.jaxformer_peer` from the working directory (the repository root,
which also makes `jaxformer` importable) and calls `make_peer(cfg, seed)` in a
worker process. The peer trains jaxformer's own DecoderLM through the same code the training
loop uses (`make_optimizer` + `make_train_step`, jitted with the train state donated) on the
benchmark's synthetic batches, with the benchmark's AdamW (lr 3e-4, betas 0.9/0.95, eps 1e-8,
wd 0.1, no clipping) and dropout 0.1 on embeddings, residual branches and, like GPT-2's
attn_pdrop, on the attention probabilities.

The Peer interface is duck-typed (this module does not import peers_bench): attributes name,
kind, tokens_per_step, n_params_counted, info, jit_on_first_call; methods setup(),
compile() -> seconds, step() -> loss (blocks until the update is done).
"""

from __future__ import annotations

import os
import time

# Imported before anything imports jax, as train.py does: the library's malloc settings for
# XLA:CPU (jaxformer.host_memory) must precede jax's CPU client.
import jaxformer


class JaxformerPeer:
  """jaxformer DecoderLM + make_optimizer + make_train_step, one jitted step per call."""

  name = 'jaxformer'
  kind = 'train'
  jit_on_first_call = False

  def __init__(self, cfg: dict, seed: int = 0, **model_overrides):
    self.cfg, self.seed = dict(cfg), seed
    self.model_overrides = model_overrides
    self.tokens_per_step = cfg['batch'] * cfg['block_size']
    self.n_params_counted = None
    self.info = {}

  def setup(self):
    import jax

    from jaxformer.bench_models import build_train, lm_batch, synthetic_batches
    from jaxformer.models import count_params

    # jaxformer.bench_models holds the shared pieces: the ModelConfig of this shape (dropout 0.1 on
    # embeddings, residuals and attention probabilities), peers_bench's AdamW as a
    # make_optimizer config, make_train_step jitted with the state donated, and
    # peers_bench's synthetic batches (same generator, same seed).
    model, self._train_step, self.state = build_train(self.cfg, self.seed, **self.model_overrides)
    self.model_cfg = model.cfg
    self.n_params_counted = count_params(self.state['params'])
    self.data = [jax.device_put(lm_batch(b)) for b in synthetic_batches(self.cfg)]
    jax.block_until_ready((self.state, self.data))
    self.compiled = None
    self.i = 0
    self.info = dict(
      lib=f'jaxformer {jaxformer.__version__} DecoderLM + make_train_step',
      jax=jax.__version__,
      device=str(jax.devices()[0]),
      XLA_FLAGS=os.environ.get('XLA_FLAGS', ''),
      model={
        k: v
        for k, v in self.model_cfg.to_dict().items()
        if k in ('scan_layers', 'remat', 'attention_impl', 'attention_dropout_rate')
      },
    )

  def compile(self) -> float:
    """Ahead-of-time trace + XLA compile of the train step, in seconds."""
    t0 = time.perf_counter()
    lowered = self._train_step.lower(self.state, self.data[0])
    t1 = time.perf_counter()
    self.compiled = lowered.compile()
    t2 = time.perf_counter()
    self.info.update(trace_lower_s=round(t1 - t0, 3), xla_compile_s=round(t2 - t1, 3))
    return t2 - t0

  def step(self) -> float:
    batch = self.data[self.i % len(self.data)]
    self.i += 1
    fn = self.compiled or self._train_step
    self.state, metrics = fn(self.state, batch)
    loss = float(metrics['loss_sum'] / metrics['weight_sum'])
    import jax

    jax.block_until_ready(self.state)  # as peers_bench's JAX peers: the update is done
    return loss


def make_peer(cfg: dict, seed: int = 0, **model_overrides) -> JaxformerPeer:
  """peers_bench's factory: the library's defaults (ModelConfig's scan_layers='auto', which
  loops over config S's 6 layers). `--extra bench.jaxformer_peer:make_peer`."""
  return JaxformerPeer(cfg, seed, **model_overrides)


def make_peer_loop(cfg: dict, seed: int = 0) -> JaxformerPeer:
  """The same model with a Python loop over layers (scan_layers=False): faster steps on CPU
  for shallow models, compile time growing with depth.
  `--extra bench.jaxformer_peer:make_peer_loop`."""
  peer = JaxformerPeer(cfg, seed, scan_layers=False)
  peer.name = 'jaxformer_loop'
  return peer


def make_peer_scan(cfg: dict, seed: int = 0) -> JaxformerPeer:
  """nn.scan over layers (scan_layers=True, the default before 'auto'): compile time flat in
  depth, slower steps on CPU. `--extra bench.jaxformer_peer:make_peer_scan`."""
  peer = JaxformerPeer(cfg, seed, scan_layers=True)
  peer.name = 'jaxformer_scan'
  return peer


def make_peer_dots(cfg: dict, seed: int = 0) -> JaxformerPeer:
  """scan over layers + remat='dots': the backward pass recomputes everything but the projection
  matmuls, so the [batch, heads, length, length] attention tensors are never stored: the
  low-memory setting. `--extra bench.jaxformer_peer:make_peer_dots`."""
  peer = JaxformerPeer(cfg, seed, scan_layers=True, remat='dots')
  peer.name = 'jaxformer_scan_dots'
  return peer


def make_peer_loop_dots(cfg: dict, seed: int = 0) -> JaxformerPeer:
  """Layer loop + remat='dots'. Kept to show that on XLA:CPU remat saves nothing without scan:
  XLA's scheduler runs the recomputation early, so the step's temporary memory is the same as
  with remat='none' (docs/performance.md). `--extra bench.jaxformer_peer:make_peer_loop_dots`."""
  peer = JaxformerPeer(cfg, seed, scan_layers=False, remat='dots')
  peer.name = 'jaxformer_loop_dots'
  return peer
