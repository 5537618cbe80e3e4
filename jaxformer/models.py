"""Public model API: `from jaxformer.models import DecoderLM, EncoderDecoder, Classifier`."""

from jaxformer.model import (
  Classifier,
  DecoderLM,
  EncoderDecoder,
  count_params,
  flops_per_token,
  loop_to_scan,
  param_count_formula,
  scan_to_loop,
)

__all__ = [
  'DecoderLM',
  'EncoderDecoder',
  'Classifier',
  'count_params',
  'flops_per_token',
  'param_count_formula',
  'scan_to_loop',
  'loop_to_scan',
]
