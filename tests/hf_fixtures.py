"""A small random GPT-2 from `transformers` (its Flax class: no torch), saved the ways real files
come, and a byte-level BPE trained with `tokenizers`. For the Hugging Face import/export tests.

    ref = make_reference(tmp_dir)
    ref.model            FlaxGPT2LMHeadModel with every weight random (biases, LayerNorms too)
    ref.dirs['pt']       transformers' PyTorch layout: 'transformer.' prefix, Conv1D [in, out]
    ref.dirs['hub']      the original hub layout: no prefix, 'h.N.attn.bias' mask buffers
    ref.dirs['flax']     FlaxGPT2LMHeadModel.save_pretrained(safe_serialization=True)
Each directory also holds config.json, vocab.json and merges.txt.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil

import numpy as np

END_OF_TEXT = '<|endoftext|>'
SAMPLE_TEXTS = [
  'ROMEO: But soft, what light through yonder window breaks?',
  "  two  spaces, tabs\tand\nnewlines\n\n and 'quotes' don't stop it.",
  'Unicode: café, naïve, 東京, emoji 🙂 and ∑ symbols',
  f'text with {END_OF_TEXT} in the middle!!! and 12345 digits',
  '',
]


@dataclasses.dataclass
class Reference:
  model: object  # transformers.FlaxGPT2LMHeadModel
  config: dict  # its config.json
  dirs: dict  # layout -> directory


def shakespeare_text(chars: int = 200_000) -> list[str]:
  """The first `chars` characters of the shipped Shakespeare corpus, as lines."""
  here = os.path.dirname(os.path.abspath(__file__))
  path = os.path.join(here, '..', 'jaxformer', 'data', 'resources', 'shakespeare.jsonl.gz')
  with gzip.open(path, 'rt') as f:
    text = json.loads(f.readline())['text']
  return text[:chars].splitlines(keepends=True)


def train_bpe(directory: str, vocab_size: int = 400) -> None:
  """Writes vocab.json + merges.txt of a byte-level BPE with '<|endoftext|>' last, as GPT-2's."""
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers

  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size - 1,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tokenizer.train_from_iterator(shakespeare_text(), trainer)
  tokenizer.model.save(directory)
  vocab_path = os.path.join(directory, 'vocab.json')
  with open(vocab_path) as f:
    vocab = json.load(f)
  vocab[END_OF_TEXT] = len(vocab)
  with open(vocab_path, 'w') as f:
    json.dump(vocab, f)


def randomized(params, seed: int):
  """Every leaf replaced by random values at its scale (so biases and norms matter too)."""
  import jax

  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda a: (rng.standard_normal(a.shape) * 0.1 + (1.0 if a.ndim == 1 else 0.0)).astype(
      np.float32
    ),
    params,
  )


def make_reference(directory: str, *, seed: int = 0) -> Reference:
  from safetensors.numpy import save_file
  from transformers import FlaxGPT2LMHeadModel, GPT2Config

  bpe_dir = os.path.join(directory, 'bpe')
  os.makedirs(bpe_dir)
  train_bpe(bpe_dir)
  with open(os.path.join(bpe_dir, 'vocab.json')) as f:
    vocab_size = len(json.load(f))
  eot = vocab_size - 1
  config = GPT2Config(
    vocab_size=vocab_size,
    n_positions=64,
    n_embd=32,
    n_layer=2,
    n_head=4,
    bos_token_id=eot,
    eos_token_id=eot,
  )
  model = FlaxGPT2LMHeadModel(config, seed=seed)
  model.params = randomized(model.params, seed)
  dirs = {layout: os.path.join(directory, layout) for layout in ('flax', 'pt', 'hub')}
  model.save_pretrained(dirs['flax'], safe_serialization=True)
  pt = pytorch_names(model.params)
  hub = {k[len('transformer.') :]: v for k, v in pt.items()}
  mask = np.tril(np.ones((64, 64), np.float32))[None, None]
  for i in range(config.n_layer):
    hub[f'h.{i}.attn.bias'] = mask
    hub[f'h.{i}.attn.masked_bias'] = np.asarray(-1e4, np.float32)
  for layout, tensors in (('pt', pt), ('hub', hub)):
    os.makedirs(dirs[layout])
    save_file(tensors, os.path.join(dirs[layout], 'model.safetensors'), metadata={'format': 'pt'})
    shutil.copy(os.path.join(dirs['flax'], 'config.json'), dirs[layout])
  for d in dirs.values():
    for name in ('vocab.json', 'merges.txt'):
      shutil.copy(os.path.join(bpe_dir, name), d)
  with open(os.path.join(dirs['flax'], 'config.json')) as f:
    return Reference(model=model, config=json.load(f), dirs=dirs)


def pytorch_names(flax_params) -> dict[str, np.ndarray]:
  """Flax GPT-2 params -> the names and [in, out] Conv1D layout GPT2LMHeadModel saves.

  Written here because transformers' own Flax -> PyTorch converter needs torch; the tests check
  this layout by loading it back with transformers (FlaxGPT2LMHeadModel.from_pretrained reads
  PyTorch-format safetensors with its own converter).
  """
  import jax

  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(flax_params):
    name = '.'.join(str(getattr(p, 'key', p)) for p in path)
    stem, _, last = name.rpartition('.')
    value = np.asarray(leaf)
    if last == 'kernel':
      value = value.T
    if last in ('kernel', 'scale', 'embedding'):
      last = 'weight'
    out[f'{stem}.{last}'] = np.ascontiguousarray(value)
  return out


def reference_logits(model, tokens: np.ndarray) -> np.ndarray:
  return np.asarray(model(tokens).logits)
