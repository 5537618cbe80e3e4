"""ModelConfig: every architectural choice of a jaxformer model, in one frozen dataclass.

Every field is a plain JSON-able value so a config round-trips through `to_dict()` /
`from_dict()` (checkpoints store it next to the weights). `__post_init__` rejects bad values
with a one-line `ValueError` that names the field and the rule, so a typo in a config file
fails at start-up instead of deep inside a jitted function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

ACTIVATIONS = ('gelu', 'relu', 'swiglu')
POSITIONS = ('learned', 'sinusoidal', 'rope')
NORMS = ('pre', 'post')
REMATS = ('none', 'full', 'dots')
# scan_layers='auto' loops over stacks of at most this many layers (see scan_layers_for).
AUTO_LOOP_MAX_LAYERS = 8
DTYPES = ('float32', 'bfloat16', 'auto')
PARAM_DTYPES = ('float32', 'bfloat16')
ATTENTION_IMPLS = ('auto', 'xla', 'cudnn', 'einsum')
# Projections LoRA can adapt (their module names), and the groups a target list may name.
LORA_PROJECTIONS = ('query', 'key', 'value', 'out', 'wi', 'wo', 'wi_gate', 'wi_up')
LORA_GROUPS = {
  'attention': ('query', 'key', 'value', 'out'),
  'mlp': ('wi', 'wo', 'wi_gate', 'wi_up'),
}
# What a model is trained for: 'lm' -> DecoderLM, 'translate' -> EncoderDecoder,
# 'classify' -> Classifier (jaxformer.models.build_model).
TASKS = ('lm', 'translate', 'classify')
# What early stopping and the best checkpoint track: validation 'loss' or 'error' (1 - accuracy).
MONITORS = ('loss', 'error')


def early_stopping_monitor(config: Mapping[str, Any]) -> str:
  """The monitor of a training config (a ConfigDict or its saved JSON dict).

  A config without the field (older runs and exports) gets the base config's default
  (configs/default.py), the one place that default is written.
  """
  monitor = (config.get('early_stopping') or {}).get('monitor')
  if monitor is None:
    from jaxformer.configs import default  # the base training config; imported when needed

    monitor = default.get_config().early_stopping.monitor
  return monitor


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int = 256  # token ids 0..vocab_size-1; id 0 is padding
  # The padded ids' logits are masked (never predicted, sampled or scored), so only the tables'
  # shapes change. Training uses 128 (configs/default.py): it divides any power-of-two mesh
  # 'model' axis up to 128, so any tokenizer shards on any mesh.
  vocab_multiple: int = 1  # embedding/output rows: vocab_size rounded up to this multiple (1: none)
  d_model: int = 256  # width of the residual stream
  num_heads: int = 4  # attention heads per layer; head_dim = d_model // num_heads
  num_layers: int = 4  # depth of DecoderLM / Classifier
  num_encoder_layers: int = 4  # EncoderDecoder encoder depth
  num_decoder_layers: int = 4  # EncoderDecoder decoder depth
  mlp_ratio: float = 4.0  # d_ff = mlp_ratio * d_model unless d_ff is set
  d_ff: int = 0  # explicit hidden width; 0 with mlp_ratio=0 means no MLP
  activation: str = 'gelu'  # 'gelu' | 'relu' | 'swiglu'
  dropout_rate: float = 0.1  # embeddings and every residual branch
  attention_dropout_rate: float = 0.0  # on attention probabilities (forces einsum attention)
  max_len: int = 256  # longest sequence (size of learned / sinusoidal tables)
  position: str = 'learned'  # 'learned' | 'sinusoidal' | 'rope'
  norm: str = 'pre'  # 'pre' (GPT-2) | 'post' (Vaswani et al. 2017)
  tie_embeddings: bool = True  # output projection = token embedding transposed
  use_bias: bool = True  # biases in projections and LayerNorm
  # True: nn.scan (compile time flat in depth; remat saves memory only here). False: a Python
  # loop (faster steps on XLA:CPU, compile time growing with depth). The layouts name their
  # parameters differently ('layer' vs 'layer_0'...); 'auto' is resolved when the config is
  # built, so to_dict() (what checkpoints and exports store) records the layout itself.
  scan_layers: bool | str = 'auto'  # 'auto': scan if remat is on or a stack has > 8 layers
  remat: str = 'none'  # 'none' | 'full' | 'dots' (save matmul outputs only)
  dtype: str = 'float32'  # compute dtype: 'float32' | 'bfloat16' | 'auto'
  param_dtype: str = 'float32'  # storage dtype of the parameters
  attention_impl: str = 'auto'  # 'auto' | 'xla' | 'cudnn' | 'einsum'
  layer_norm_epsilon: float = 1e-6  # LayerNorm epsilon (added to the variance)
  lora_rank: int = 0  # > 0: low-rank adapters (LoRA) on the lora_targets projections
  lora_alpha: float = 16.0  # LoRA update scale is lora_alpha / lora_rank
  lora_targets: str = 'query,value'  # comma-separated names from LORA_PROJECTIONS or LORA_GROUPS

  def __post_init__(self):
    def fail(field: str, rule: str):
      raise ValueError(f'ModelConfig.{field}={getattr(self, field)!r} is invalid: {rule}')

    for name in (
      'vocab_size',
      'd_model',
      'num_heads',
      'num_layers',
      'num_encoder_layers',
      'num_decoder_layers',
      'max_len',
      'vocab_multiple',
    ):
      value = getattr(self, name)
      if not _is_int(value) or value <= 0:
        fail(name, 'must be a positive integer')
    if not _is_int(self.d_ff) or self.d_ff < 0:
      fail('d_ff', 'must be an integer >= 0 (0 = mlp_ratio * d_model)')
    if not _is_number(self.mlp_ratio) or self.mlp_ratio < 0:
      fail('mlp_ratio', 'must be a number >= 0')
    if self.d_model % self.num_heads:
      fail('d_model', f'must be divisible by num_heads={self.num_heads}')
    for name in ('dropout_rate', 'attention_dropout_rate'):
      value = getattr(self, name)
      if not _is_number(value) or not 0.0 <= value < 1.0:
        fail(name, 'must be a number in [0, 1)')
    for name, allowed in (
      ('activation', ACTIVATIONS),
      ('position', POSITIONS),
      ('norm', NORMS),
      ('remat', REMATS),
      ('dtype', DTYPES),
      ('param_dtype', PARAM_DTYPES),
      ('attention_impl', ATTENTION_IMPLS),
    ):
      if getattr(self, name) not in allowed:
        fail(name, f'must be one of {allowed}')
    if self.position == 'rope' and self.head_dim % 2:
      fail('position', f"'rope' needs an even head_dim, got {self.head_dim}")
    for name in ('tie_embeddings', 'use_bias'):
      if not isinstance(getattr(self, name), bool):
        fail(name, 'must be a bool')
    if not (isinstance(self.scan_layers, bool) or self.scan_layers == 'auto'):
      fail('scan_layers', "must be True, False or 'auto'")
    if self.scan_layers == 'auto':
      # Resolved once, here, so that to_dict() (what checkpoints and exports store) names the
      # layout the parameters have, whatever the machine that reads them back.
      object.__setattr__(self, 'scan_layers', scan_layers_for(self))
    if not _is_number(self.layer_norm_epsilon) or self.layer_norm_epsilon <= 0:
      fail('layer_norm_epsilon', 'must be a positive number')
    if not _is_int(self.lora_rank) or self.lora_rank < 0:
      fail('lora_rank', 'must be an integer >= 0 (0 = no LoRA)')
    if not _is_number(self.lora_alpha) or self.lora_alpha <= 0:
      fail('lora_alpha', 'must be a positive number')
    if not isinstance(self.lora_targets, str) or not self.lora_target_names:
      fail('lora_targets', f'must name projections from {LORA_PROJECTIONS} or {tuple(LORA_GROUPS)}')
    unknown = [t for t in self.lora_target_names if t not in LORA_PROJECTIONS]
    if unknown:
      fail('lora_targets', f'unknown {unknown}; use {LORA_PROJECTIONS} or {tuple(LORA_GROUPS)}')

  # ----- derived sizes -----
  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def padded_vocab_size(self) -> int:
    """Rows of the embedding and output tables: vocab_size rounded up to vocab_multiple."""
    return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

  @property
  def ff_dim(self) -> int:
    """Hidden width of the feed-forward block; 0 means the block is absent."""
    return self.d_ff if self.d_ff > 0 else int(self.mlp_ratio * self.d_model)

  @property
  def lora_target_names(self) -> tuple[str, ...]:
    """The projection names lora_targets selects, groups expanded."""
    if not isinstance(self.lora_targets, str):
      return ()
    names = []
    for part in (p.strip() for p in self.lora_targets.split(',')):
      names.extend(LORA_GROUPS.get(part, (part,) if part else ()))
    return tuple(dict.fromkeys(names))

  @property
  def compute_dtype(self):
    """dtype of activations and matmuls ('auto': bfloat16 on TPU/GPU, float32 on CPU)."""
    if self.dtype == 'auto':
      return jnp.bfloat16 if jax.default_backend() in ('tpu', 'gpu') else jnp.float32
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self):
    return jnp.dtype(self.param_dtype)

  # ----- (de)serialisation -----
  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in d:
      if key not in known:
        raise ValueError(f'ModelConfig has no field {key!r}; known fields: {sorted(known)}')
    return cls(**dict(d))

  def replace(self, **changes) -> ModelConfig:
    """A copy with `changes`. The layout stays as resolved (parameters built with it keep
    fitting); pass scan_layers='auto' along with a new depth to resolve it again."""
    return dataclasses.replace(self, **changes)


def scan_layers_for(cfg: ModelConfig) -> bool:
  """What scan_layers='auto' resolves to. Depends on the config alone (never on the machine),
  so every machine builds the same parameter layout from the same config.

  Measured on XLA:CPU (docs/performance.md): the loop trains config S (6 layers) ~1.2-1.3x
  faster than scan; scan keeps compile time flat in depth, while the loop's grows by ~1 s of
  CPU a layer (at 8 layers it is ~1.2x scan's); and remat saves memory only under scan (XLA
  hoists a looped layer's recomputation).
  """
  if cfg.remat != 'none':
    return True
  deepest = max(cfg.num_layers, cfg.num_encoder_layers, cfg.num_decoder_layers)
  return deepest > AUTO_LOOP_MAX_LAYERS


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def recorded_config_problem(recorded: Any) -> str | None:
  """What makes a run's recorded config (its config.json, an export's 'config') unusable, or None.

  It must be a JSON object, its 'model' and 'dataset' objects, and every field that the default
  training config (jaxformer.configs.default) has must hold the same kind of value: a number
  where the default is a number, a string where it is a string, ... A field the default leaves
  None or 'auto' may hold anything. Fields the default lacks (a user config's own) are not read.
  """
  from jaxformer.configs import default  # the training defaults; same layer, imported late

  if not isinstance(recorded, dict):
    return f'it is a JSON {_json_kind(recorded)}, not an object'
  for key in ('model', 'dataset'):
    if key in recorded and not isinstance(recorded[key], dict):
      return f'field {key!r} is a JSON {_json_kind(recorded[key])}, not an object'
  return next(_kind_mismatches(recorded, default.get_config().to_dict(), ''), None)


def _kind_mismatches(recorded: dict, reference: dict, prefix: str):
  for key, expected in reference.items():
    if key not in recorded:
      continue
    value, name = recorded[key], f'{prefix}{key}'
    if isinstance(expected, dict):
      if not isinstance(value, dict):
        yield f'field {name!r} is a JSON {_json_kind(value)}, not an object'
      else:
        yield from _kind_mismatches(value, expected, f'{name}.')
    elif expected is None or expected == 'auto' or value is None:
      continue
    elif _json_kind(value) != _json_kind(expected):
      shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + '...'
      yield f'field {name!r} is {shown}, not a JSON {_json_kind(expected)}'


def _json_kind(value: Any) -> str:
  if isinstance(value, bool):
    return 'boolean'
  if isinstance(value, (int, float)):
    return 'number'
  if isinstance(value, str):
    return 'string'
  if isinstance(value, (list, tuple)):
    return 'array'
  if isinstance(value, dict):
    return 'object'
  return 'null' if value is None else type(value).__name__
