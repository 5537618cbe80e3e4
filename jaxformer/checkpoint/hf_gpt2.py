"""GPT-2 in Hugging Face's format <-> a jaxformer DecoderLM: configs and tensors, in numpy.

Hugging Face names (after an optional 'transformer.' prefix), Conv1D weights [in, out]:

    wte.weight [V, D], wpe.weight [P, D]             token_embed, pos_embed
    h.N.ln_1 / h.N.ln_2 / ln_f  .weight .bias [D]    self_attention_norm / mlp_norm / final_norm
    h.N.attn.c_attn.weight [D, 3D], .bias [3D]       query | key | value, each [D, H, K]
    h.N.attn.c_proj.weight [D, D]                    out [H, K, D]
    h.N.mlp.c_fc.weight [D, F], c_proj.weight [F, D] mlp wi / wo
    lm_head.weight [V, D]                            only when the embeddings are untied

V is GPT-2's real vocabulary: a model padded past it (ModelConfig.vocab_multiple) gains zero
rows on import and loses them on export.

Files saved by transformers' Flax classes name them 'kernel' (Conv1D stored [out, in]),
'scale' and 'embedding' instead; the original hub upload also carries causal-mask buffers
('h.N.attn.bias', 'h.N.attn.masked_bias'), which are not parameters and are ignored.
Every error is a CheckpointError whose message names the file and the field.

jaxformer's id 0 is padding, while GPT-2's id 0 is the token '!', so jaxformer's GPT-2 tokenizer
shifts GPT-2's ids up (jaxformer.data.bpe.ID_OFFSET). `add_padding_rows` gives the imported
model the vocabulary rows those ids need, and `drop_padding_rows` takes them out again before an
export: model_config_from_hf / params_from_hf / hf_from_params speak GPT-2's own ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from jaxformer.checkpoint.errors import CheckpointError
from jaxformer.checkpoint.vocab import with_vocab_size
from jaxformer.config import ModelConfig

# GELU with the tanh approximation, which is what jaxformer's 'gelu' computes.
TANH_GELUS = ('gelu_new', 'gelu_pytorch_tanh')
_BUFFER = re.compile(r'^h\.\d+\.attn\.(bias|masked_bias)$')
_FLAX_NAMES = {'kernel': 'weight', 'scale': 'weight', 'embedding': 'weight'}


# ----- configs -----


def model_config_from_hf(hf: Mapping, where: str = 'config.json') -> ModelConfig:
  """The ModelConfig of the GPT-2 that a Hugging Face config.json describes."""

  def field(name, default=None):
    return hf.get(name, default)

  def refuse(name, why):
    raise CheckpointError(f'{where}: {name}={field(name)!r} is not supported: {why}')

  if field('model_type') != 'gpt2':
    refuse('model_type', "only GPT-2 checkpoints (model_type 'gpt2') can be imported")
  if field('activation_function', 'gelu_new') not in TANH_GELUS:
    refuse(
      'activation_function', f'jaxformer computes GELU with the tanh approximation {TANH_GELUS}'
    )
  if not field('scale_attn_weights', True):
    refuse('scale_attn_weights', 'jaxformer always scales attention by 1/sqrt(head_dim)')
  if field('scale_attn_by_inverse_layer_idx', False):
    refuse('scale_attn_by_inverse_layer_idx', 'jaxformer has no per-layer attention scaling')
  if field('add_cross_attention', False):
    refuse('add_cross_attention', 'only the decoder-only GPT-2 can be imported')
  try:
    d_model = int(field('n_embd'))
    return ModelConfig(
      vocab_size=int(field('vocab_size')),
      d_model=d_model,
      num_heads=int(field('n_head')),
      num_layers=int(field('n_layer')),
      d_ff=int(field('n_inner') or 4 * d_model),
      activation='gelu',
      dropout_rate=float(field('resid_pdrop', 0.1)),
      attention_dropout_rate=float(field('attn_pdrop', 0.1)),
      max_len=int(field('n_positions')),
      position='learned',
      norm='pre',
      tie_embeddings=bool(field('tie_word_embeddings', True)),
      use_bias=True,
      layer_norm_epsilon=float(field('layer_norm_epsilon', 1e-5)),
    )
  except (TypeError, ValueError) as e:
    raise CheckpointError(f'{where} is not a usable GPT-2 config ({e})') from None


def gpt2_incompatibility(cfg: ModelConfig) -> str | None:
  """Why `cfg` cannot be written as a Hugging Face GPT-2 (one line naming the field), or None."""
  rules = (
    ('position', cfg.position == 'learned', 'GPT-2 learns absolute positions'),
    ('norm', cfg.norm == 'pre', 'GPT-2 normalises before each sublayer (pre-LN)'),
    ('activation', cfg.activation == 'gelu', "GPT-2's MLP is one GELU projection"),
    ('use_bias', cfg.use_bias, 'GPT-2 has biases in every projection and LayerNorm'),
    ('d_ff', cfg.ff_dim > 0, 'GPT-2 layers have an MLP'),
  )
  for name, ok, why in rules:
    if not ok:
      return f'ModelConfig.{name}={getattr(cfg, name)!r} has no GPT-2 equivalent ({why})'
  return None


def hf_config_from_model(cfg: ModelConfig, eos_id: int) -> dict:
  """A Hugging Face GPT2Config dict for `cfg` (which must pass gpt2_incompatibility)."""
  return {
    'architectures': ['GPT2LMHeadModel'],
    'model_type': 'gpt2',
    'vocab_size': cfg.vocab_size,
    'n_positions': cfg.max_len,
    'n_embd': cfg.d_model,
    'n_layer': cfg.num_layers,
    'n_head': cfg.num_heads,
    'n_inner': cfg.ff_dim,
    'activation_function': 'gelu_new',
    'resid_pdrop': cfg.dropout_rate,
    'embd_pdrop': cfg.dropout_rate,
    'attn_pdrop': cfg.attention_dropout_rate,
    'layer_norm_epsilon': cfg.layer_norm_epsilon,
    'scale_attn_weights': True,
    'scale_attn_by_inverse_layer_idx': False,
    'reorder_and_upcast_attn': False,
    'tie_word_embeddings': cfg.tie_embeddings,
    'bos_token_id': eos_id,
    'eos_token_id': eos_id,
    'initializer_range': 0.02,
    'use_cache': True,
    'torch_dtype': 'float32',
  }


# ----- tensors -----


def canonical_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """PyTorch-style names without prefix and Conv1D weights [in, out], whatever saved the file."""
  out = {}
  for name, value in tensors.items():
    if name.startswith('transformer.'):
      name = name[len('transformer.') :]
    if _BUFFER.match(name):
      continue
    stem, _, leaf = name.rpartition('.')
    if leaf in _FLAX_NAMES:
      if leaf == 'kernel' and value.ndim == 2:
        value = value.T  # Flax's Conv1D stores [out, in]
      name = f'{stem}.{_FLAX_NAMES[leaf]}'
    out[name] = value
  return out


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every tensor a GPT-2 of config `cfg` has, with its shape (canonical names)."""
  d, f = cfg.d_model, cfg.ff_dim
  shapes = {'wte.weight': (cfg.vocab_size, d), 'wpe.weight': (cfg.max_len, d)}
  for i in range(cfg.num_layers):
    layer = {
      'ln_1.weight': (d,),
      'ln_1.bias': (d,),
      'attn.c_attn.weight': (d, 3 * d),
      'attn.c_attn.bias': (3 * d,),
      'attn.c_proj.weight': (d, d),
      'attn.c_proj.bias': (d,),
      'ln_2.weight': (d,),
      'ln_2.bias': (d,),
      'mlp.c_fc.weight': (d, f),
      'mlp.c_fc.bias': (f,),
      'mlp.c_proj.weight': (f, d),
      'mlp.c_proj.bias': (d,),
    }
    shapes.update({f'h.{i}.{k}': v for k, v in layer.items()})
  shapes.update({'ln_f.weight': (d,), 'ln_f.bias': (d,)})
  if not cfg.tie_embeddings:
    shapes['lm_head.weight'] = (cfg.vocab_size, d)
  return shapes


def check_tensors(tensors: Mapping[str, np.ndarray], cfg: ModelConfig, where: str) -> None:
  """Raises on the first missing, unexpected or misshapen tensor (canonical names)."""
  expected = expected_shapes(cfg)
  for name, shape in expected.items():
    if name not in tensors:
      raise CheckpointError(f'{where} lacks the tensor {name}; the file does not match config.json')
    if tuple(tensors[name].shape) != shape:
      raise CheckpointError(
        f'{where}: {name} has shape {list(tensors[name].shape)} but config.json implies '
        f'{list(shape)}; the weights and config.json do not belong together'
      )
  extra = sorted(set(tensors) - set(expected) - {'lm_head.weight'})
  if extra:
    raise CheckpointError(
      f'{where} has tensors GPT-2 does not: {", ".join(extra[:3])}; is it a GPT-2 checkpoint?'
    )


def params_from_hf(tensors: Mapping[str, np.ndarray], cfg: ModelConfig, where: str) -> dict:
  """Canonical GPT-2 tensors -> a DecoderLM params tree (float32 numpy) in cfg's layer layout."""
  from jaxformer.model.blocks import scan_to_loop

  check_tensors(tensors, cfg, where)
  d, h, k = cfg.d_model, cfg.num_heads, cfg.head_dim

  def t(name):
    return np.asarray(tensors[name], np.float32)

  def norm(prefix):
    return {'scale': t(f'{prefix}.weight'), 'bias': t(f'{prefix}.bias')}

  def dense(prefix, kernel_shape=None):
    kernel = t(f'{prefix}.weight')
    if kernel_shape is not None:
      kernel = kernel.reshape(kernel_shape)
    return {'kernel': kernel, 'bias': t(f'{prefix}.bias')}

  layers = []
  for i in range(cfg.num_layers):
    p = f'h.{i}'
    qkv_w = t(f'{p}.attn.c_attn.weight').reshape(d, 3, h, k)
    qkv_b = t(f'{p}.attn.c_attn.bias').reshape(3, h, k)
    attention = {
      name: {'kernel': qkv_w[:, j], 'bias': qkv_b[j]}
      for j, name in enumerate(('query', 'key', 'value'))
    }
    attention['out'] = dense(f'{p}.attn.c_proj', (h, k, d))
    layers.append(
      {
        'self_attention_norm': norm(f'{p}.ln_1'),
        'self_attention': attention,
        'mlp_norm': norm(f'{p}.ln_2'),
        'mlp': {'wi': dense(f'{p}.mlp.c_fc'), 'wo': dense(f'{p}.mlp.c_proj')},
      }
    )
  stacked = {'layer': _stack(layers)}
  rows = cfg.padded_vocab_size  # the model's tables may be padded past GPT-2's vocabulary
  backbone = {
    'token_embed': {'embedding': with_vocab_size(t('wte.weight'), rows, axis=0)},
    'pos_embed': {'embedding': t('wpe.weight')},
    'layers': stacked if cfg.scan_layers else scan_to_loop(stacked),
    'final_norm': norm('ln_f'),
  }
  params = {'backbone': backbone}
  if not cfg.tie_embeddings:
    kernel = with_vocab_size(t('lm_head.weight').T, rows, axis=1)
    params['lm_head'] = {'kernel': np.ascontiguousarray(kernel)}
  return params


def hf_from_params(params: Mapping, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """A DecoderLM params tree -> tensors named as transformers saves GPT2LMHeadModel today."""
  from jaxformer.model.blocks import loop_to_scan

  backbone = _numpy(loop_to_scan(_numpy(params['backbone'])))
  layer = backbone['layers']['layer']
  d = cfg.d_model
  vocab = cfg.vocab_size  # Hugging Face has no padded rows
  out = {
    'wte.weight': with_vocab_size(backbone['token_embed']['embedding'], vocab, axis=0),
    'wpe.weight': backbone['pos_embed']['embedding'],
  }
  for i in range(cfg.num_layers):
    at = {k: {n: v[i] for n, v in leaves.items()} for k, leaves in layer['self_attention'].items()}
    qkv = ('query', 'key', 'value')
    out.update(
      {
        f'h.{i}.ln_1.weight': layer['self_attention_norm']['scale'][i],
        f'h.{i}.ln_1.bias': layer['self_attention_norm']['bias'][i],
        f'h.{i}.attn.c_attn.weight': np.concatenate(
          [at[n]['kernel'].reshape(d, d) for n in qkv], axis=1
        ),
        f'h.{i}.attn.c_attn.bias': np.concatenate([at[n]['bias'].reshape(d) for n in qkv]),
        f'h.{i}.attn.c_proj.weight': at['out']['kernel'].reshape(d, d),
        f'h.{i}.attn.c_proj.bias': at['out']['bias'],
        f'h.{i}.ln_2.weight': layer['mlp_norm']['scale'][i],
        f'h.{i}.ln_2.bias': layer['mlp_norm']['bias'][i],
        f'h.{i}.mlp.c_fc.weight': layer['mlp']['wi']['kernel'][i],
        f'h.{i}.mlp.c_fc.bias': layer['mlp']['wi']['bias'][i],
        f'h.{i}.mlp.c_proj.weight': layer['mlp']['wo']['kernel'][i],
        f'h.{i}.mlp.c_proj.bias': layer['mlp']['wo']['bias'][i],
      }
    )
  out['ln_f.weight'] = backbone['final_norm']['scale']
  out['ln_f.bias'] = backbone['final_norm']['bias']
  named = {f'transformer.{k}': np.ascontiguousarray(v) for k, v in out.items()}
  if not cfg.tie_embeddings:
    kernel = with_vocab_size(params['lm_head']['kernel'], vocab, axis=1)
    named['lm_head.weight'] = np.ascontiguousarray(kernel.T)
  return named


# ----- jaxformer's padding id -----


def add_padding_rows(cfg: ModelConfig, params: Mapping, rows: int) -> tuple[ModelConfig, dict]:
  """GPT-2's config and params (`params_from_hf`) -> the same model with `rows` vocabulary rows
  put before GPT-2's, so that jaxformer id i + rows is GPT-2's id i.

  Each new row of the output projection (the token table when tied, else lm_head's column) is the
  mean of GPT-2's V rows. Its logit is then the mean of GPT-2's logits, so by Jensen's inequality
  its probability is at most 1/(V + 1) whatever the input, and GPT-2's tokens keep their
  log-probabilities to within log(1 + 1/V) (2e-5 nats for V = 50257); a zero row's logit 0 would
  instead outweigh GPT-2's mostly negative logits. A padding row of the input table is only read
  at padded positions, which no real token attends to. Decoding never samples id 0.
  """
  table = np.asarray(params['backbone']['token_embed']['embedding'])  # [V, D]
  embed = np.concatenate([np.repeat(table.mean(0, keepdims=True), rows, 0), table])
  out = _with_token_table(params, embed)
  if 'lm_head' in params:
    kernel = np.asarray(params['lm_head']['kernel'])  # [D, V]
    pad = np.repeat(kernel.mean(1, keepdims=True), rows, 1)
    out['lm_head'] = {'kernel': np.concatenate([pad, kernel], axis=1)}
  return cfg.replace(vocab_size=cfg.vocab_size + rows), out


def drop_padding_rows(
  cfg: ModelConfig, params: Mapping, rows: int, vocab: int
) -> tuple[ModelConfig, dict]:
  """The inverse of `add_padding_rows`: GPT-2's config and params without the first `rows` ids.

  vocab: the ids the tokenizer uses, padding included; rows past it (a table padded further,
  e.g. for sharding) are not GPT-2's either and go too.
  """
  table = np.asarray(params['backbone']['token_embed']['embedding'])[rows:vocab]
  out = _with_token_table(params, table)
  if 'lm_head' in params:
    out['lm_head'] = {'kernel': np.asarray(params['lm_head']['kernel'])[:, rows:vocab]}
  return cfg.replace(vocab_size=vocab - rows), out


def _with_token_table(params: Mapping, table: np.ndarray) -> dict:
  backbone = params['backbone']
  return {**params, 'backbone': {**backbone, 'token_embed': {'embedding': table}}}


def _stack(layers: list[dict]) -> dict:
  """[tree, tree, ...] -> one tree whose leaves gain a leading [num_layers] axis."""
  first = layers[0]
  if isinstance(first, dict):
    return {key: _stack([layer[key] for layer in layers]) for key in first}
  return np.stack(layers)


def _numpy(tree):
  if isinstance(tree, Mapping):
    return {k: _numpy(v) for k, v in tree.items()}
  return np.asarray(tree)
