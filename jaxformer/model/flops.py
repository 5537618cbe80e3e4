"""Parameter counts and training FLOPs per token, next to the model they describe.

Parameter count (d = d_model, f = ff_dim, V = padded vocab, b = 1 if use_bias else 0):
    attention sublayer  4 d^2 + 4 d b          (q, k, v: [d, H, K] + [H, K]; out: [H, K, d] + [d])
    feed-forward        2 d f + (f + d) b      (gelu / relu)
                        3 d f + (2 f + d) b    (swiglu: gate and up projections)
    LayerNorm           d + d b
    decoder layer       attention + feed-forward + one LayerNorm per sublayer
                        (+ cross-attention and its LayerNorm in an encoder-decoder decoder)
    embeddings          V d (token table) + max_len d (learned positions only)
    final LayerNorm     pre-LN only;  lm_head  V d when embeddings are untied
    classifier head     d C + C b

Training FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B; nanoGPT's estimate_mfu):
    6 N + 12 L d T
N is the non-embedding parameter count (every parameter except the token and position tables;
biases and LayerNorm included, they are negligible) plus V d for the output projection, which
is real compute even when tied to the token table (V here is the real vocabulary: the padded
columns are computed but are not useful work). The
2N forward + 4N backward FLOPs of the matmuls give 6N; attention scores and the weighted sum of
values add 2 * 2 * T * d per layer forward, times 3 with the backward pass, for 12 L d T.
For an encoder-decoder each target token is paired with one source token (S = T = seq_len):
L counts every attention sublayer (encoder self + decoder self + decoder cross).
"""

from __future__ import annotations

import jax

from jaxformer.config import TASKS, ModelConfig


def count_params(params) -> int:
  """Number of scalars in a parameter tree (boxed nn.Partitioned or plain arrays)."""
  return int(sum(x.size for x in jax.tree.leaves(params)))


def _attention(cfg: ModelConfig) -> int:
  return 4 * cfg.d_model**2 + 4 * cfg.d_model * cfg.use_bias


def _feed_forward(cfg: ModelConfig) -> int:
  d, f, b = cfg.d_model, cfg.ff_dim, int(cfg.use_bias)
  if f == 0:
    return 0
  if cfg.activation == 'swiglu':
    return 3 * d * f + (2 * f + d) * b
  return 2 * d * f + (f + d) * b


def _norm(cfg: ModelConfig) -> int:
  return cfg.d_model * (1 + cfg.use_bias)


def _layer(cfg: ModelConfig, cross_attention: bool = False) -> int:
  n = _attention(cfg) + _norm(cfg)
  if cross_attention:
    n += _attention(cfg) + _norm(cfg)
  if cfg.ff_dim > 0:
    n += _feed_forward(cfg) + _norm(cfg)
  return n


def _stack(cfg: ModelConfig, num_layers: int, cross_attention: bool = False) -> int:
  """One TransformerStack without its token table: positions, layers, final norm."""
  n = num_layers * _layer(cfg, cross_attention)
  n += cfg.max_len * cfg.d_model if cfg.position == 'learned' else 0
  n += _norm(cfg) if cfg.norm == 'pre' else 0
  return n


def param_count_formula(cfg: ModelConfig, task: str = 'lm', num_classes: int = 0) -> int:
  """Analytic parameter count of the model of `task` (DecoderLM / EncoderDecoder / Classifier)."""
  if task not in TASKS:
    raise ValueError(f'task={task!r} is invalid: use one of {TASKS}')
  token_table = cfg.padded_vocab_size * cfg.d_model  # the padded rows are parameters too
  if task == 'classify':
    return (
      token_table
      + _stack(cfg, cfg.num_layers)
      + cfg.d_model * num_classes
      + num_classes * cfg.use_bias
    )
  head = 0 if cfg.tie_embeddings else token_table
  if task == 'lm':
    return token_table + _stack(cfg, cfg.num_layers) + head
  return (
    token_table
    + _stack(cfg, cfg.num_encoder_layers)
    + _stack(cfg, cfg.num_decoder_layers, cross_attention=True)
    + head
  )


def flops_per_token(cfg: ModelConfig, seq_len: int, task: str = 'lm') -> float:
  """Training (forward + backward) FLOPs per token: 6 N + 12 L d T (see the module docstring)."""
  if task not in TASKS:
    raise ValueError(f'task={task!r} is invalid: use one of {TASKS}')
  d = cfg.d_model
  if task == 'translate':
    matmul_params = cfg.num_encoder_layers * _layer(cfg) + cfg.num_decoder_layers * _layer(
      cfg, cross_attention=True
    )
    attention_sublayers = cfg.num_encoder_layers + 2 * cfg.num_decoder_layers
  else:
    matmul_params = cfg.num_layers * _layer(cfg)
    attention_sublayers = cfg.num_layers
  if task != 'classify':
    matmul_params += cfg.vocab_size * d  # output projection
  return float(6 * matmul_params + 12 * attention_sublayers * d * seq_len)
