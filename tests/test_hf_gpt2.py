"""GPT-2 in and out of the Hugging Face format, checked against `transformers` (a test-only
dependency; its Flax GPT-2 needs no torch) on a small random GPT-2 and a trained byte-level BPE."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

pytest.importorskip('transformers')

from helpers import run_train  # noqa: E402
from hf_fixtures import SAMPLE_TEXTS, make_reference, reference_logits  # noqa: E402
from lora_checks import assert_base_frozen_and_adapters_moved  # noqa: E402

from jaxformer import hf  # noqa: E402
from jaxformer.checkpoint import load_pretrained  # noqa: E402
from jaxformer.data.bpe import ID_OFFSET  # noqa: E402
from jaxformer.data.tokenizers import until_eos  # noqa: E402
from jaxformer.model.transformer import DecoderLM  # noqa: E402


@pytest.fixture(scope='module')
def ref(tmp_path_factory):
  return make_reference(str(tmp_path_factory.mktemp('gpt2')))


@pytest.fixture(scope='module')
def imported(ref, tmp_path_factory):
  """The 'pt' layout imported once: the export directory."""
  out = str(tmp_path_factory.mktemp('imported') / 'gpt2')
  assert hf.main(['import', ref.dirs['pt'], '--output', out]) == 0
  return out


def random_tokens(ref, shape=(2, 24), seed=0):
  """GPT-2 ids, as transformers takes them (jaxformer's are these + ID_OFFSET)."""
  return np.random.default_rng(seed).integers(0, ref.config['vocab_size'], shape, dtype=np.int32)


def jaxformer_logits(path, gpt2_tokens):
  """The jaxformer model's logits for GPT-2 ids, at GPT-2's ids (without the padding id)."""
  loaded = load_pretrained(path)
  model = DecoderLM(loaded.model_config)
  logits = model.apply({'params': loaded.params}, gpt2_tokens + ID_OFFSET)
  # A run trained here pads its table (vocab_multiple): those ids are not GPT-2's either.
  return np.asarray(logits)[..., ID_OFFSET : loaded.model_config.vocab_size]


def read_tensors(directory):
  from safetensors.numpy import load_file

  return load_file(os.path.join(directory, 'model.safetensors'))


@pytest.mark.parametrize('layout', ['pt', 'hub', 'flax'])
def test_import_gives_the_logits_of_transformers(ref, layout, tmp_path):
  out = str(tmp_path / 'gpt2')
  assert hf.main(['import', ref.dirs[layout], '--output', out]) == 0
  tokens = random_tokens(ref)
  np.testing.assert_allclose(
    jaxformer_logits(out, tokens), reference_logits(ref.model, tokens), atol=1e-4, rtol=0
  )
  cfg = load_pretrained(out).model_config
  assert (cfg.position, cfg.norm, cfg.activation, cfg.layer_norm_epsilon) == (
    'learned',
    'pre',
    'gelu',
    1e-5,
  )
  assert cfg.tie_embeddings and cfg.use_bias


def test_greedy_generation_with_cache_matches_transformers(ref, imported, capsys):
  from jaxformer import decode, generate, inference

  loaded = inference.load(imported)
  eot = ref.config['eos_token_id']
  assert loaded.tokenizer.eos_id == eot + ID_OFFSET
  prompt = np.asarray([[eot] + loaded.tokenizer.encode('ROMEO: But soft')], np.int32) - ID_OFFSET
  new = 12
  # No EOS: a random model may emit '<|endoftext|>', and both sides must then carry on.
  want = np.asarray(
    ref.model.generate(
      prompt, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=eot
    ).sequences
  )
  got = jax.device_get(
    decode.generate(
      loaded.model,
      loaded.params,
      prompt + ID_OFFSET,
      max_new_tokens=new,
      rng=jax.random.key(0),
      temperature=0,
    )
  )
  np.testing.assert_array_equal(got, want + ID_OFFSET)
  # The generate command takes the import as it is and prints the same greedy text.
  capsys.readouterr()
  argv = ['--workdir', imported, '--prompt', 'ROMEO: But soft', '--temperature', '0']
  assert generate.main(argv + ['--max_new_tokens', str(new)]) == 0
  text = capsys.readouterr().out.rstrip('\n')
  expected = np.asarray(
    ref.model.generate(prompt, max_new_tokens=new, do_sample=False, pad_token_id=eot).sequences
  )[0, prompt.shape[1] :]
  expected = until_eos(expected + ID_OFFSET, loaded.tokenizer.eos_id)
  assert text == 'ROMEO: But soft' + loaded.tokenizer.decode(expected)


def test_tokenizer_encodes_and_decodes_like_transformers(ref, imported):
  from transformers import GPT2Tokenizer, GPT2TokenizerFast

  from jaxformer.data import load_tokenizer
  from jaxformer.data.bpe import load_hf_tokenizer

  ours = load_tokenizer(os.path.join(imported, 'tokenizer'))  # as saved in the export
  assert ours.kind == 'gpt2_bpe' and load_hf_tokenizer(ref.dirs['pt']).kind == 'gpt2_bpe'
  # jaxformer's ids are GPT-2's + ID_OFFSET: id 0 is padding, GPT-2's 0 is a real token.
  eot, vocab = ref.config['eos_token_id'] + ID_OFFSET, ref.config['vocab_size'] + ID_OFFSET
  assert (ours.pad_id, ours.bos_id, ours.eos_id, ours.vocab_size) == (0, eot, eot, vocab)
  for theirs in (
    GPT2Tokenizer.from_pretrained(ref.dirs['pt']),
    GPT2TokenizerFast.from_pretrained(ref.dirs['pt']),
  ):
    for text in SAMPLE_TEXTS:
      ids = ours.encode(text)
      assert ids == [i + ID_OFFSET for i in theirs.encode(text)], (type(theirs).__name__, text)
      gpt2_ids = [i - ID_OFFSET for i in ids]
      assert ours.decode(ids) == theirs.decode(gpt2_ids, skip_special_tokens=True)
      assert ours.decode(ids) == text.replace('<|endoftext|>', '')
    assert ours.encode_batch(SAMPLE_TEXTS) == [
      [i + ID_OFFSET for i in theirs.encode(t)] for t in SAMPLE_TEXTS
    ]
  # Bits per byte divide by these: a text's ids add up to its UTF-8 length (the special is 0).
  sizes = ours.token_bytes()
  assert sizes.shape == (vocab,) and sizes[0] == sizes[eot] == 0
  for text in SAMPLE_TEXTS:
    expected = len(text.replace('<|endoftext|>', '').encode('utf-8'))
    assert int(sizes[ours.encode(text)].sum()) == expected, text


def test_import_reads_a_directory_with_only_tokenizer_json(ref, tmp_path):
  """A GPT-2 directory whose tokenizer is only the fast tokenizer's tokenizer.json (no vocab.json,
  no merges.txt) imports, and its tokenizer encodes and decodes as transformers' does."""
  from transformers import GPT2TokenizerFast

  from jaxformer.data import load_tokenizer

  source = str(tmp_path / 'source')
  shutil.copytree(ref.dirs['pt'], source)
  GPT2TokenizerFast.from_pretrained(source).save_pretrained(source)
  for name in ('vocab.json', 'merges.txt'):
    os.remove(os.path.join(source, name))
  assert os.path.isfile(os.path.join(source, 'tokenizer.json'))
  out = str(tmp_path / 'gpt2')
  assert hf.main(['import', source, '--output', out]) == 0
  ours = load_tokenizer(os.path.join(out, 'tokenizer'))
  assert ours.kind == 'gpt2_bpe'
  eot, vocab = ref.config['eos_token_id'] + ID_OFFSET, ref.config['vocab_size'] + ID_OFFSET
  assert (ours.pad_id, ours.bos_id, ours.eos_id, ours.vocab_size) == (0, eot, eot, vocab)
  # transformers' tokenizer from the same tokenizer.json, and from the original vocab + merges
  for theirs in (
    GPT2TokenizerFast.from_pretrained(source),
    GPT2TokenizerFast.from_pretrained(ref.dirs['pt']),
  ):
    for text in SAMPLE_TEXTS:
      ids = ours.encode(text)
      assert ids == [i + ID_OFFSET for i in theirs.encode(text)], text
      assert ours.decode(ids) == theirs.decode(
        [i - ID_OFFSET for i in ids], skip_special_tokens=True
      )
      assert ours.decode(ids) == text.replace('<|endoftext|>', '')


def test_import_then_export_gives_back_the_same_tensors_bit_for_bit(ref, imported, tmp_path):
  out = str(tmp_path / 'hf')
  assert hf.main(['export', imported, '--output', out]) == 0
  original, exported = read_tensors(ref.dirs['pt']), read_tensors(out)
  assert sorted(exported) == sorted(original)
  for name, value in original.items():
    assert exported[name].dtype == value.dtype and exported[name].shape == value.shape, name
    assert exported[name].tobytes() == value.tobytes(), name
  with open(os.path.join(out, 'config.json')) as f:
    config = json.load(f)
  for key in ('vocab_size', 'n_positions', 'n_embd', 'n_layer', 'n_head', 'layer_norm_epsilon'):
    assert config[key] == ref.config[key], key
  for name in ('vocab.json', 'merges.txt'):  # the tokenizer files are the same as well
    with (
      open(os.path.join(out, name), 'rb') as a,
      open(os.path.join(ref.dirs['pt'], name), 'rb') as b,
    ):
      assert (
        a.read() == b.read()
        if name == 'merges.txt'
        else json.loads(a.read()) == json.loads(b.read())
      )


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_a_jaxformer_trained_model_exports_to_transformers(ref, imported, tmp_path):
  """The README's path: LoRA fine-tuning of the import, --merge-lora, then export to HF."""
  from transformers import FlaxGPT2LMHeadModel, GPT2TokenizerFast

  from jaxformer import export
  from jaxformer.data import load_tokenizer

  run = str(tmp_path / 'run')
  result = run_train(
    '--config=configs/tiny.py',
    f'--workdir={run}',
    f'--config.init_from={imported}',  # fine-tunes the imported GPT-2 (and keeps its tokenizer)
    '--config.model.num_heads=4',
    '--config.model.max_len=64',
    '--config.model.layer_norm_epsilon=1e-5',
    '--config.lora.rank=2',
    '--config.learning_rate=1e-2',
    '--config.num_train_steps=3',
    '--config.eval_every_steps=3',
    '--config.checkpoint_every_steps=3',
    '--config.sample_tokens=0',
    '--config.warmup_steps=1',
  )
  assert result.returncode == 0, result.stderr[-2000:]
  merged, out = str(tmp_path / 'merged'), str(tmp_path / 'hf')
  assert export.main(['--workdir', run, '--out', merged, '--merge-lora']) == 0
  assert hf.main(['export', merged, '--output', out]) == 0
  tokens = random_tokens(ref, seed=1)
  trained = jaxformer_logits(merged, tokens)
  assert np.abs(trained - jaxformer_logits(imported, tokens)).max() > 1e-3  # it did train
  theirs = FlaxGPT2LMHeadModel.from_pretrained(out)
  np.testing.assert_allclose(reference_logits(theirs, tokens), trained, atol=1e-4, rtol=0)
  ours, fast = (
    load_tokenizer(os.path.join(run, 'tokenizer')),
    GPT2TokenizerFast.from_pretrained(out),
  )
  for text in SAMPLE_TEXTS:
    assert [i + ID_OFFSET for i in fast.encode(text)] == ours.encode(text)


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_lora_classifier_on_a_users_csv_from_the_imported_gpt2(imported, tmp_path):
  """The README's "Start from GPT-2" path for your own CSV: configs/gpt2_lora_genre.py with
  dataset.name=files on examples/tickets.csv, init_from the import (here the small reference
  GPT-2, so the model fields are its sizes). GPT-2's tokenizer is reused, the base stays frozen
  and the adapters train."""
  from jaxformer.data import load_label_names, load_tokenizer

  run = str(tmp_path / 'run')
  result = run_train(
    '--config=configs/gpt2_lora_genre.py',
    f'--workdir={run}',
    f'--config.init_from={imported}',
    '--config.dataset.name=files',
    '--config.dataset.train_files=examples/tickets.csv',
    '--config.dataset.text_key=text',
    '--config.dataset.label_key=label',
    '--config.model.d_model=32',
    '--config.model.num_heads=4',
    '--config.model.num_layers=2',
    '--config.model.max_len=64',
    '--config.lora.rank=2',
    '--config.num_train_steps=3',
    '--config.eval_every_steps=3',
    '--config.checkpoint_every_steps=3',
    '--config.warmup_steps=1',
  )
  assert result.returncode == 0, result.stderr[-2000:]
  ours, theirs = (
    load_tokenizer(os.path.join(run, 'tokenizer')),
    load_tokenizer(os.path.join(imported, 'tokenizer')),
  )
  assert ours.kind == 'gpt2_bpe' and ours.to_json() == theirs.to_json()
  assert load_label_names(run) == ['account', 'billing', 'bug']
  tuned = assert_base_frozen_and_adapters_moved(run, imported, rank=2)
  assert tuned.task == 'classify' and tuned.num_classes == 3


def llama_config(directory):
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump({'model_type': 'llama', 'architectures': ['LlamaForCausalLM'], 'hidden_size': 32}, f)


def wider_config(directory):
  with open(os.path.join(directory, 'config.json')) as f:
    config = json.load(f)
  config['n_embd'] = 64
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump(config, f)


def truncate_weights(directory):
  path = os.path.join(directory, 'model.safetensors')
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[: len(data) // 2])


def pickle_only(directory):
  path = os.path.join(directory, 'model.safetensors')
  os.replace(path, os.path.join(directory, 'pytorch_model.bin'))


BAD_INPUTS = {
  'missing config.json': (lambda d: os.remove(os.path.join(d, 'config.json')), 'config.json'),
  'missing weights': (
    lambda d: os.remove(os.path.join(d, 'model.safetensors')),
    'model.safetensors',
  ),
  'missing tokenizer': (lambda d: os.remove(os.path.join(d, 'merges.txt')), 'tokenizer'),
  'llama config': (llama_config, "model_type='llama'"),
  'mismatched shapes': (wider_config, 'shape'),
  'truncated safetensors': (truncate_weights, 'truncated'),
  'pickle only': (pickle_only, 'pytorch_model.bin'),
}


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_hf_directory_exits_2_with_one_line_and_writes_nothing(ref, case, tmp_path, capsys):
  source = str(tmp_path / 'source')
  shutil.copytree(ref.dirs['pt'], source)
  damage, named = BAD_INPUTS[case]
  damage(source)
  parent = tmp_path / 'exports'
  parent.mkdir()
  capsys.readouterr()
  assert hf.main(['import', source, '--output', str(parent / 'gpt2')]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert named in err, err
  assert os.listdir(parent) == []  # nothing written, no temporary left behind


def write_model(path, cfg, tokenizer):
  """An export of a freshly initialised DecoderLM with `cfg` and `tokenizer`."""
  import flax.linen as nn

  from jaxformer.checkpoint.pretrained import write_export

  params = nn.unbox(DecoderLM(cfg).init(jax.random.key(0), np.zeros((1, 4), np.int32))['params'])
  tok_dir = str(path) + '-tokenizer'
  tokenizer.save(tok_dir)
  config = {'task': 'lm', 'model': cfg.to_dict()}
  kwargs = dict(config=config, model_config=cfg, step=0, val_loss=None, source='test')
  return write_export(path, params, tokenizer_dir=tok_dir, **kwargs)


@pytest.mark.parametrize(
  'change, named',
  [
    (dict(position='rope'), 'ModelConfig.position'),
    (dict(activation='swiglu'), 'ModelConfig.activation'),
    (dict(norm='post'), 'ModelConfig.norm'),
    (dict(use_bias=False), 'ModelConfig.use_bias'),
    ('byte tokenizer', "tokenizer kind 'byte'"),
    (dict(lora_rank=2), '--merge-lora'),
    (dict(vocab_size=100), 'do not belong together'),  # fewer ids than its tokenizer
  ],
)
def test_export_refuses_what_gpt2_cannot_express(ref, imported, change, named, tmp_path, capsys):
  from jaxformer.data import ByteTokenizer, load_tokenizer

  loaded = load_pretrained(imported)
  tokenizer = load_tokenizer(loaded.tokenizer_dir)
  cfg = loaded.model_config
  if change == 'byte tokenizer':
    tokenizer, cfg = ByteTokenizer(), cfg.replace(vocab_size=ByteTokenizer.vocab_size)
  else:
    cfg = cfg.replace(**change)
  model = write_model(tmp_path / 'model', cfg, tokenizer)
  parent = tmp_path / 'hf'
  parent.mkdir()
  capsys.readouterr()
  assert hf.main(['export', model, '--output', str(parent / 'gpt2')]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1 and named in err, err
  assert os.listdir(parent) == []


def test_evaluate_scores_an_import(imported, tmp_path):
  from jaxformer import evaluate

  copy = str(tmp_path / 'gpt2')
  shutil.copytree(imported, copy)
  assert evaluate.main(['--workdir', copy, '--limit', '2', '--batch_size', '2']) == 0
  (written,) = [name for name in os.listdir(copy) if name.startswith('eval_')]
  with open(os.path.join(copy, written)) as f:
    result = json.load(f)
  assert result['task'] == 'lm' and np.isfinite(result['loss'])


def test_gpt2_small_has_the_parameter_count_of_gpt2():
  """The hub's gpt2 config.json gives a DecoderLM with GPT-2 small's 124,439,808 parameters;
  the import adds one padding row of 768 to its token table."""
  from jaxformer.checkpoint.hf_gpt2 import model_config_from_hf

  hub = {'model_type': 'gpt2', 'vocab_size': 50257, 'n_positions': 1024, 'n_embd': 768}
  hub |= {'n_layer': 12, 'n_head': 12, 'activation_function': 'gelu_new'}

  def count(cfg):
    shapes = jax.eval_shape(
      lambda: DecoderLM(cfg).init(jax.random.key(0), np.zeros((1, 8), np.int32))['params']
    )
    return sum(np.prod(x.shape) for x in jax.tree.leaves(shapes))

  cfg = model_config_from_hf(hub)
  assert count(cfg) == 124_439_808
  assert count(cfg.replace(vocab_size=50257 + ID_OFFSET)) == 124_439_808 + ID_OFFSET * 768


def test_gpt2_lora_config_takes_an_imported_gpt2_backbone():
  """configs/gpt2_lora_genre.py's classifier has the backbone of the hub's gpt2, plus adapters."""
  from jaxformer.configs import gpt2_lora_genre

  from jaxformer.checkpoint.hf_gpt2 import model_config_from_hf
  from jaxformer.model import lora
  from jaxformer.model.transformer import Classifier
  from jaxformer.training.setup import model_config

  hub = {'model_type': 'gpt2', 'vocab_size': 50257, 'n_positions': 1024, 'n_embd': 768}
  hub |= {'n_layer': 12, 'n_head': 12}
  x = np.zeros((1, 8), np.int32)

  def shapes(model):
    params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
    return jax.tree.map(lambda a: a.shape, params['backbone'])

  # The tokenizer of the import has GPT-2's 50257 ids + the padding id; so has its token table.
  imported = model_config_from_hf(hub).replace(vocab_size=50257 + ID_OFFSET)
  cfg = model_config(gpt2_lora_genre.get_config(), 50257 + ID_OFFSET)
  assert cfg.lora_rank == 8
  tuned = shapes(Classifier(cfg, num_classes=3))
  # Training pads the vocabulary to a multiple of 128; init_from adds the zero rows on loading.
  imported = imported.replace(vocab_multiple=cfg.vocab_multiple)
  assert lora.without_factors(tuned) == shapes(DecoderLM(imported))
  assert tuned['token_embed']['embedding'].value == (50304, 768)
