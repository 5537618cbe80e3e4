"""The three models: DecoderLM (GPT), Classifier (GPT backbone + head), EncoderDecoder (2017).

Parameter trees (pad id is 0, logits are float32, V is cfg.padded_vocab_size):
    DecoderLM       {'backbone': {'token_embed', ['pos_embed'], 'layers', ['final_norm']},
                     ['lm_head']}
    Classifier      {'backbone': <same subtree as DecoderLM>, 'head'}
    EncoderDecoder  {'token_embed', 'encoder': {['pos_embed'], 'layers', ['final_norm']},
                     'decoder': {... same ...}, ['lm_head']}
'pos_embed' exists for position='learned', 'final_norm' for norm='pre', 'lm_head' when
tie_embeddings=False.

Decoding with the KV cache (flax convention):
    cache = DecoderLM(cfg).init(key, jnp.zeros((B, max_len), jnp.int32), decode=True)['cache']
    logits, mut = model.apply(
        {'params': params, 'cache': cache}, chunk, decode=True, mutable=['cache'])
    cache = mut['cache']       # chunk: [B, n]; a prompt (n > 1) is prefilled in one call
Causal stacks do not mask padding (the data pads on the right, where causality already hides
it); in decode mode the cached prompt must not contain padding.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxformer.config import ModelConfig
from jaxformer.model.blocks import LayerStack
from jaxformer.model.layers import (
  INIT_STD,
  AddPositions,
  Dropout,
  Projection,
  layer_norm,
  token_embedding,
  zero_padded,
)


class TransformerStack(nn.Module):
  """Embedding -> positions -> dropout -> layers -> final norm. tokens [B, L] -> hidden [B, L, D].

  `embed` shares a token table owned by the parent (encoder-decoder); otherwise the stack
  owns one, named 'token_embed'. Packed rows (several examples in one row) pass `segments`
  [B, L] (example ids, 0 = padding) and `positions` [B, L] (restarting at 0 in each example):
  attention then stays inside each example, so each one is computed as if it were alone.
  """

  cfg: ModelConfig
  num_layers: int
  causal: bool = True
  cross_attention: bool = False
  embed: nn.Module | None = None

  def setup(self):
    if self.embed is None:
      self.token_embed = token_embedding(self.cfg)

  def embedding(self) -> nn.Embed:
    return self.token_embed if self.embed is None else self.embed

  @nn.compact
  def __call__(
    self,
    tokens,
    *,
    encoded=None,
    encoded_valid=None,
    segments=None,
    positions=None,
    encoded_segments=None,
    deterministic=True,
    decode=False,
    head_mask=None,
  ):
    cfg = self.cfg
    length = tokens.shape[1]
    if cfg.position != 'rope' and length > cfg.max_len:
      raise ValueError(
        f'sequence length {length} exceeds max_len={cfg.max_len}; raise ModelConfig.max_len'
      )
    positions = self.positions(length, decode) if positions is None else positions
    x = self.embedding()(tokens)  # [B, L, D]
    if cfg.position != 'rope':
      x = AddPositions(cfg, name='pos_embed')(x, positions)
    x = Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    # Bidirectional attention must ignore padded keys; causal attention never sees the
    # right-padding anyway, and leaving it unmasked keeps the fast causal kernel.
    key_valid = None if self.causal else tokens != 0
    x = LayerStack(
      cfg,
      self.num_layers,
      causal=self.causal,
      cross_attention=self.cross_attention,
      deterministic=deterministic,
      decode=decode,
      name='layers',
    )(x, head_mask, key_valid, positions, encoded, encoded_valid, segments, encoded_segments)
    if cfg.norm == 'pre':
      x = layer_norm(cfg, 'final_norm')(x)
    return x

  def positions(self, length: int, decode: bool):
    """Absolute positions [L] of this call's tokens: 0..L-1, or cache_index..+L-1 when decoding."""
    if not decode:
      return jnp.arange(length)
    initialized = self.has_variable('cache', 'index')
    index = self.variable('cache', 'index', lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return jnp.arange(length)
    start = index.value
    index.value = start + length
    return start + jnp.arange(length)


# The logit of a padded vocabulary id: exp() of it underflows to exactly 0 next to any real
# logit, and unlike -inf it keeps 0 * logit finite (label smoothing, entropies).
PADDED_LOGIT = -1.0e9


def output_logits(cfg: ModelConfig, hidden, embed: nn.Embed, lm_head: nn.Module | None):
  """hidden [B, L, D] -> float32 logits [B, L, padded V] through the tied table or a separate
  head; the ids from cfg.vocab_size on (ModelConfig.vocab_multiple's padding) get PADDED_LOGIT.

  Masking keeps the padded width, which splits evenly over the mesh: slicing it off would cut
  the vocab shards unevenly and move logits between devices.
  """
  logits = embed.attend(hidden) if lm_head is None else lm_head(hidden)
  logits = logits.astype(jnp.float32)
  if cfg.padded_vocab_size > cfg.vocab_size:
    real = jnp.arange(cfg.padded_vocab_size) < cfg.vocab_size
    logits = jnp.where(real, logits, PADDED_LOGIT)
  return nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))


def untied_head(cfg: ModelConfig) -> Projection:
  return Projection(
    (cfg.d_model, cfg.padded_vocab_size),
    ('embed', 'vocab'),
    kernel_init=zero_padded(nn.initializers.normal(INIT_STD), cfg.vocab_size, axis=1),
    use_bias=False,
    dtype=cfg.compute_dtype,
    param_dtype=cfg.params_dtype,
    name='lm_head',
  )


class DecoderLM(nn.Module):
  """GPT-style causal language model. tokens [B, L] int32 -> logits [B, L, V] float32."""

  cfg: ModelConfig

  def setup(self):
    self.backbone = TransformerStack(self.cfg, self.cfg.num_layers, causal=True)
    self.lm_head = None if self.cfg.tie_embeddings else untied_head(self.cfg)

  def __call__(
    self,
    tokens,
    *,
    deterministic: bool = True,
    decode: bool = False,
    head_mask=None,
    segments=None,
    positions=None,
  ):
    """head_mask: optional [num_layers, num_heads] float, 1 keeps a head and 0 removes it.
    segments, positions: [B, L] for packed rows (see TransformerStack)."""
    hidden = self.backbone(
      tokens,
      deterministic=deterministic,
      decode=decode,
      head_mask=head_mask,
      segments=segments,
      positions=positions,
    )
    return output_logits(self.cfg, hidden, self.backbone.embedding(), self.lm_head)


class Classifier(nn.Module):
  """Sequence classifier on the DecoderLM backbone. tokens [B, L] -> logits [B, num_classes].

  pooling='mean' averages the hidden states of the non-pad tokens, 'last' takes the last
  non-pad token (which, in a causal backbone, has seen the whole text). backbone='encoder'
  runs the same layers bidirectionally (padding masked); its parameters are the same tree, so
  a pretrained DecoderLM backbone loads into either.
  """

  cfg: ModelConfig
  num_classes: int
  pooling: str = 'mean'
  backbone_kind: str = 'decoder'

  def setup(self):
    if self.pooling not in ('mean', 'last'):
      raise ValueError(f"Classifier.pooling={self.pooling!r} is invalid: use 'mean' or 'last'")
    if self.backbone_kind not in ('decoder', 'encoder'):
      raise ValueError(
        f"Classifier.backbone_kind={self.backbone_kind!r} is invalid: use 'decoder' or 'encoder'"
      )
    if self.num_classes < 1:
      raise ValueError(f'Classifier.num_classes={self.num_classes} is invalid: must be >= 1')
    self.backbone = TransformerStack(
      self.cfg, self.cfg.num_layers, causal=self.backbone_kind == 'decoder'
    )
    self.dropout = Dropout(self.cfg.dropout_rate)
    self.head = Projection(
      (self.cfg.d_model, self.num_classes),
      ('embed', 'classes'),
      use_bias=self.cfg.use_bias,
      stddev=INIT_STD,
      dtype=self.cfg.compute_dtype,
      param_dtype=self.cfg.params_dtype,
    )

  def __call__(self, tokens, *, deterministic: bool = True):
    hidden = self.backbone(tokens, deterministic=deterministic).astype(jnp.float32)  # [B, L, D]
    valid = (tokens != 0).astype(jnp.float32)  # [B, L]
    if self.pooling == 'mean':
      pooled = (hidden * valid[..., None]).sum(1) / jnp.maximum(valid.sum(1, keepdims=True), 1.0)
    else:
      length = tokens.shape[1]
      last = length - 1 - jnp.argmax(valid[:, ::-1], axis=1)  # [B]
      pooled = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    pooled = self.dropout(pooled, deterministic=deterministic)  # [B, D]
    return self.head(pooled).astype(jnp.float32)


class EncoderDecoder(nn.Module):
  """The translation transformer: bidirectional encoder, causal decoder with cross-attention.

  src [B, S], tgt_in [B, T] -> logits [B, T, V]. Source and target share one token table
  (a joint vocabulary), which is also the output projection when tie_embeddings=True.
  """

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.token_embed = token_embedding(cfg)
    self.encoder = TransformerStack(
      cfg, cfg.num_encoder_layers, causal=False, embed=self.token_embed
    )
    self.decoder = TransformerStack(
      cfg, cfg.num_decoder_layers, causal=True, cross_attention=True, embed=self.token_embed
    )
    self.lm_head = None if cfg.tie_embeddings else untied_head(cfg)

  def __call__(
    self, src, tgt_in, *, deterministic: bool = True, decode: bool = False, packing=None
  ):
    """packing: for packed rows, {'inputs_segmentation', 'inputs_position' [B, S],
    'targets_segmentation', 'targets_position' [B, T]} (see TransformerStack)."""
    if packing is None:
      encoded = self.encode(src, deterministic=deterministic)
      return self.decode(encoded, src, tgt_in, deterministic=deterministic, decode=decode)
    encoded = self.encoder(
      src,
      segments=packing['inputs_segmentation'],
      positions=packing['inputs_position'],
      deterministic=deterministic,
    )
    hidden = self.decoder(
      tgt_in,
      encoded=encoded,
      encoded_valid=src != 0,
      segments=packing['targets_segmentation'],
      positions=packing['targets_position'],
      encoded_segments=packing['inputs_segmentation'],
      deterministic=deterministic,
      decode=decode,
    )
    return output_logits(self.cfg, hidden, self.token_embed, self.lm_head)

  def encode(self, src, *, deterministic: bool = True):
    """src [B, S] -> encoded [B, S, D]; run once per source when decoding step by step."""
    return self.encoder(src, deterministic=deterministic)

  def decode(self, encoded, src, tgt_in, *, deterministic: bool = True, decode: bool = False):
    """encoded [B, S, D], src [B, S] (for its padding mask), tgt_in [B, T] -> logits [B, T, V]."""
    hidden = self.decoder(
      tgt_in, encoded=encoded, encoded_valid=src != 0, deterministic=deterministic, decode=decode
    )
    return output_logits(self.cfg, hidden, self.token_embed, self.lm_head)
