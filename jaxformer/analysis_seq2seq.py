"""Look inside a trained EncoderDecoder: the residual stream of both stacks, layer by layer.

The translation counterpart of jaxformer.analysis.capture (which handles DecoderLM only):

    pre = jaxformer.load_pretrained('runs/numbers_translate')
    cap = capture(pre.model_config, pre.params, src, tgt_in)   # int32 [B, S], [B, T]
    cap.encoder   # [enc_layers + 1, B, S, D]: embeddings (+ positions), then after each layer
    cap.decoder   # [dec_layers + 1, B, T, D]: the same for the teacher-forced target input
    cap.logits    # [B, T, V], equal to EncoderDecoder(cfg).apply({'params': params}, src, tgt_in)
    real_positions(cap.encoder, src != 0)   # [layers + 1, N, D], one row per real token
    mean_over_real(cap.encoder, src != 0)   # [layers + 1, B, D], one row per sequence

Probes (jaxformer.analysis.train_probe) read these; padding positions never reach them, because
both helpers keep only the positions a mask marks real. Capturing runs the same parameters with
analysis.analysis_config (a plain layer loop, so every layer's output has its own name); the
states are those before the final norm, as in analysis.capture.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.analysis import analysis_config, loop_params
from jaxformer.config import ModelConfig
from jaxformer.model import EncoderDecoder, TransformerLayer
from jaxformer.model.layers import AddPositions


@dataclasses.dataclass
class Seq2SeqCapture:
  logits: np.ndarray  # [B, T, V] float32, equal to the normal forward pass
  encoder: np.ndarray  # [enc_layers + 1, B, S, D]: [0] = embeddings (+ positions), [i] = layer i
  decoder: np.ndarray  # [dec_layers + 1, B, T, D]: the same for the decoder stack


def _records_hidden(module, method_name: str) -> bool:
  # Only the outputs of the layers, the shared token table and the position step are stored.
  return method_name == '__call__' and isinstance(
    module, (TransformerLayer, AddPositions, nn.Embed)
  )


def _stack_states(inter: dict, stack: str, num_layers: int, embedded) -> jnp.ndarray:
  """[layers + 1, B, L, D] from one stack's intermediates; `embedded` is its token embedding."""
  mine = inter[stack]
  first = mine['pos_embed']['__call__'][0] if 'pos_embed' in mine else embedded
  # A TransformerLayer returns (x, None), the (carry, output) pair nn.scan expects.
  layers = [mine['layers'][f'layer_{i}']['__call__'][0][0] for i in range(num_layers)]
  return jnp.stack([first] + layers)


@functools.lru_cache(maxsize=8)
def _capture_fn(cfg: ModelConfig):
  model = EncoderDecoder(cfg)

  def run(params, src, tgt_in):
    logits, state = model.apply(
      {'params': params},
      src,
      tgt_in,
      capture_intermediates=_records_hidden,
      mutable=['intermediates'],
    )
    inter = state['intermediates']
    # The token table is shared: its first call embeds the source, its second the target.
    embed_src, embed_tgt = inter['token_embed']['__call__']
    encoder = _stack_states(inter, 'encoder', cfg.num_encoder_layers, embed_src)
    decoder = _stack_states(inter, 'decoder', cfg.num_decoder_layers, embed_tgt)
    return logits, encoder, decoder

  return jax.jit(run)


def capture(cfg: ModelConfig, params, src, tgt_in) -> Seq2SeqCapture:
  """Logits and both stacks' residual streams for src [B, S] and teacher-forced tgt_in [B, T]."""
  logits, encoder, decoder = _capture_fn(analysis_config(cfg))(
    loop_params(params), jnp.asarray(src, jnp.int32), jnp.asarray(tgt_in, jnp.int32)
  )
  return Seq2SeqCapture(np.asarray(logits), np.asarray(encoder), np.asarray(decoder))


def hidden_states(
  cfg: ModelConfig, params, src, tgt_in, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
  """(encoder [enc_layers + 1, N, S, D], decoder [dec_layers + 1, N, T, D]) for N rows,
  computed batch_size rows at a time."""
  src, tgt_in = np.asarray(src), np.asarray(tgt_in)
  parts = [
    capture(cfg, params, src[i : i + batch_size], tgt_in[i : i + batch_size])
    for i in range(0, len(src), batch_size)
  ]
  return (
    np.concatenate([p.encoder for p in parts], axis=1),
    np.concatenate([p.decoder for p in parts], axis=1),
  )


def real_positions(hidden, real) -> np.ndarray:
  """hidden [layers + 1, N, L, D], real bool [N, L] -> [layers + 1, real.sum(), D], row-major."""
  return np.asarray(hidden)[:, np.asarray(real, bool)]


def mean_over_real(hidden, real) -> np.ndarray:
  """hidden [layers + 1, N, L, D], real bool [N, L] -> [layers + 1, N, D]: the mean over each
  row's real positions (a row with none gives zeros)."""
  real = np.asarray(real, bool)[None, :, :, None]
  total = np.where(real, np.asarray(hidden), 0.0).sum(2)
  return total / np.maximum(real.sum(2), 1)
