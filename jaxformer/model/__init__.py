"""The jaxformer model library: read layers -> attention -> blocks -> transformer -> flops."""

from jaxformer.model.attention import MultiHeadAttention, attention_mask
from jaxformer.model.blocks import (
  LayerStack,
  TransformerLayer,
  loop_to_scan,
  scan_to_loop,
)
from jaxformer.model.flops import count_params, flops_per_token, param_count_formula
from jaxformer.model.layers import FeedForward, Projection, apply_rope, sinusoidal_table
from jaxformer.model.transformer import Classifier, DecoderLM, EncoderDecoder, TransformerStack

__all__ = [
  'Classifier',
  'DecoderLM',
  'EncoderDecoder',
  'TransformerStack',
  'TransformerLayer',
  'LayerStack',
  'MultiHeadAttention',
  'FeedForward',
  'Projection',
  'attention_mask',
  'apply_rope',
  'sinusoidal_table',
  'scan_to_loop',
  'loop_to_scan',
  'count_params',
  'flops_per_token',
  'param_count_formula',
]
