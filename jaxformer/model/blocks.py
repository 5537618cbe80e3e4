"""Transformer layers and the layer stack (nn.scan, nn.remat or a plain loop).

A layer is a sequence of residual sublayers. With pre-LN (GPT-2, the default)
    x = x + Dropout(Sublayer(LayerNorm(x)))
and with post-LN (Vaswani et al. 2017)
    x = LayerNorm(x + Dropout(Sublayer(x))).

Parameter names inside a layer: 'self_attention', 'cross_attention' (decoder of an
encoder-decoder only), 'mlp', and one norm per sublayer ('self_attention_norm', ...).
A stack names its layers 'layer' (scan: one subtree with a leading [num_layers] axis, logical
name 'layers') or 'layer_0', 'layer_1', ... (loop); `scan_to_loop` / `loop_to_scan` convert.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.config import ModelConfig
from jaxformer.model.attention import MultiHeadAttention
from jaxformer.model.layers import Dropout, FeedForward, layer_norm


class TransformerLayer(nn.Module):
  """Self-attention [+ cross-attention over an encoder output] + feed-forward.

  causal=True, cross_attention=False: a GPT block. causal=False: an encoder layer (Vaswani et
  al. 2017), bidirectional. causal=True, cross_attention=True: the decoder layer of an
  encoder-decoder. num_layers (the stack's depth) scales the init of the residual projections.
  Static switches are attributes (not call arguments) so nn.scan / nn.remat can lift them.
  __call__ returns (x, None): the (carry, per-layer output) pair that nn.scan expects.
  """

  cfg: ModelConfig
  num_layers: int
  causal: bool = True
  cross_attention: bool = False
  deterministic: bool = True
  decode: bool = False

  def residual(self, x, name: str, sublayer):
    cfg = self.cfg
    dropout = Dropout(cfg.dropout_rate)
    if cfg.norm == 'pre':
      return x + dropout(
        sublayer(layer_norm(cfg, f'{name}_norm')(x)), deterministic=self.deterministic
      )
    return layer_norm(cfg, f'{name}_norm')(
      x + dropout(sublayer(x), deterministic=self.deterministic)
    )

  @nn.compact
  def __call__(
    self,
    x,
    head_mask,
    key_valid,
    positions,
    encoded=None,
    encoded_valid=None,
    segments=None,
    encoded_segments=None,
  ):
    """x: [B, L, D]; head_mask: [H] or None; key_valid: [B, L] or None; positions: [L] or
    [B, L]; encoded: [B, S, D] and encoded_valid: [B, S] for cross-attention (encoded=None
    while decoding: its keys/values are in the cache); segments [B, L]
    and encoded_segments [B, S]: example ids of packed rows (attention stays inside one)."""
    cfg, det, depth = self.cfg, self.deterministic, self.num_layers
    x = self.residual(
      x,
      'self_attention',
      lambda h: MultiHeadAttention(
        cfg, causal=self.causal, num_layers=depth, name='self_attention'
      )(
        h,
        key_valid=key_valid,
        positions=positions,
        segments=None if segments is None else (segments, segments),
        head_mask=head_mask,
        deterministic=det,
        decode=self.decode,
      ),
    )
    if self.cross_attention:
      x = self.residual(
        x,
        'cross_attention',
        lambda h: MultiHeadAttention(
          cfg, cross_attention=True, num_layers=depth, name='cross_attention'
        )(
          h,
          encoded,
          key_valid=encoded_valid,
          segments=None if segments is None else (segments, encoded_segments),
          deterministic=det,
          decode=self.decode,
        ),
      )
    if cfg.ff_dim > 0:
      x = self.residual(x, 'mlp', lambda h: FeedForward(cfg, num_layers=depth, name='mlp')(h))
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed')), None


REMAT_POLICIES = {
  'full': None,  # save nothing: recompute the whole layer in the backward pass
  'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep projection outputs
}


class LayerStack(nn.Module):
  """num_layers identical layers. x: [B, L, D] -> [B, L, D].

  head_mask: optional [num_layers, H]; in scan mode it is a scanned input (row i -> layer i).
  """

  cfg: ModelConfig
  num_layers: int
  causal: bool = True
  cross_attention: bool = False
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(
    self,
    x,
    head_mask,
    key_valid,
    positions,
    encoded=None,
    encoded_valid=None,
    segments=None,
    encoded_segments=None,
  ):
    cfg = self.cfg
    if head_mask is not None and head_mask.shape != (self.num_layers, cfg.num_heads):
      raise ValueError(
        f'head_mask has shape {head_mask.shape}; expected [num_layers, num_heads] = '
        f'{(self.num_layers, cfg.num_heads)}'
      )
    block = TransformerLayer
    if cfg.remat != 'none':
      # prevent_cse only matters outside scan (scan already stops XLA from merging the
      # recomputation with the forward pass).
      block = nn.remat(block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    kwargs = dict(
      num_layers=self.num_layers,
      causal=self.causal,
      cross_attention=self.cross_attention,
      deterministic=self.deterministic,
      decode=self.decode,
    )
    if cfg.scan_layers:
      block = nn.scan(
        block,
        variable_axes={'params': 0, 'cache': 0, 'intermediates': 0},
        split_rngs={'params': True, 'dropout': True},
        in_axes=(0,) + (nn.broadcast,) * 6,
        length=self.num_layers,
        metadata_params={nn.PARTITION_NAME: 'layers'},
      )
      x, _ = block(cfg, name='layer', **kwargs)(
        x, head_mask, key_valid, positions, encoded, encoded_valid, segments, encoded_segments
      )
      return x
    for i in range(self.num_layers):
      layer_mask = None if head_mask is None else head_mask[i]
      x, _ = block(cfg, name=f'layer_{i}', **kwargs)(
        x, layer_mask, key_valid, positions, encoded, encoded_valid, segments, encoded_segments
      )
    return x


# ----- parameter layout conversion (unboxed trees: params, cache or grads) -----


def scan_to_loop(tree: Any) -> Any:
  """{'layer': leaves [N, ...]} -> {'layer_0': ..., 'layer_{N-1}': ...}, anywhere in the tree."""
  if not isinstance(tree, dict):
    return tree
  out = {}
  for key, value in tree.items():
    if key == 'layer':
      n = jax.tree.leaves(value)[0].shape[0]
      for i in range(n):
        out[f'layer_{i}'] = jax.tree.map(lambda a, i=i: a[i], value)
    else:
      out[key] = scan_to_loop(value)
  return out


def loop_to_scan(tree: Any) -> Any:
  """Inverse of `scan_to_loop`: stacks 'layer_0'..'layer_{N-1}' into 'layer'."""
  if not isinstance(tree, dict):
    return tree
  layer_keys = sorted(
    (k for k in tree if k.startswith('layer_') and k[6:].isdigit()), key=lambda k: int(k[6:])
  )
  out = {k: loop_to_scan(v) for k, v in tree.items() if k not in layer_keys}
  if layer_keys:
    out['layer'] = jax.tree.map(lambda *xs: jnp.stack(xs), *[tree[k] for k in layer_keys])
  return out
