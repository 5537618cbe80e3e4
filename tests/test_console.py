"""What a run prints: the start-up summary (also in startup.txt), one line per evaluation, and the
final metric over the whole named split as the last line."""

import json
import os
import re
import types

import jax
import pytest
from jaxformer.configs import tiny

from jaxformer.training import console, train_and_evaluate
from jaxformer.training.callbacks import EarlyStopping
from jaxformer.training.runtime import make_runtime


def _printed_block(out: str) -> dict:
  """{'task': ..., 'model': ...} from the start-up block's 'key   value' lines."""
  keys = ('task', 'model', 'devices', 'sharding', 'dtype', 'attention', 'work', 'evaluation')
  rows = {}
  for line in out.splitlines():
    key = line.split(' ', 1)[0]
    if key in keys + ('workdir',) and key not in rows:
      rows[key] = line[len(key) :].strip()
  return rows


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('console') / 'run')


def _tiny_config(**overrides):
  config = tiny.get_config()  # 8 test devices: mesh data=8
  config.sample_tokens = 0
  config.update(overrides)
  return config


def test_startup_summary_eval_lines_and_final_metric(workdir, capfd):
  summary = train_and_evaluate(_tiny_config(), workdir)
  out = capfd.readouterr().out
  rows = _printed_block(out)
  assert rows['task'] == 'lm on jaxformer_shakespeare'
  total, non_embedding, real, padding = (
    int(x.replace(',', '')) for x in re.findall(r'\d[\d,]*', rows['model'])[:4]
  )
  with open(os.path.join(workdir, 'config.json')) as f:
    model = json.load(f)['model']  # the token and learned position tables are the embeddings
  padded_vocab = 384  # the byte tokenizer's 259 ids, padded to a multiple of 128
  assert model['vocab_size'] == 259 and padding == (padded_vocab - 259) * model['d_model']
  assert real + padding == total
  embeddings = (padded_vocab + model['max_len']) * model['d_model']
  assert rows['model'].startswith('DecoderLM') and total - non_embedding == embeddings
  assert rows['devices'].startswith(f'{jax.device_count()} x cpu')
  assert rows['sharding'] == 'mesh data=8 model=1: batch over data'
  assert rows['dtype'] == 'compute float32, parameters float32'
  assert 'attention_impl=auto' in rows['attention']
  assert rows['work'] == '256 tokens per step; 20 steps = 5,120 tokens'  # 8 x 32 tokens
  assert rows['evaluation'].startswith('2 evaluations, every 10 steps and at the end, on 2 batches')
  assert rows['workdir'] == f'{os.path.abspath(workdir)} (new run)'
  with open(os.path.join(workdir, 'startup.txt')) as f:
    written = f.read()
  assert all(value in written for value in rows.values())

  evals = [line for line in out.splitlines() if line.startswith('eval step')]
  assert [line.split()[2] for line in evals] == ['10/20', '20/20']
  best = summary['best_val_loss']
  assert re.fullmatch(
    rf'eval step 20/20  val loss [\d.]+  bits/byte [\d.]+  best loss {best:.4f} at step '
    rf'{summary["best_step"]}  patience \d/5 left',
    evals[-1],
  ), evals[-1]

  final = summary['final']
  assert final['split'] == 'validation' and final['step'] == summary['best_step']
  assert final['eval_s'] > 0  # the final whole-split evaluation is timed on its own
  last = out.strip().splitlines()[-1]
  assert last == (
    f'final: bits/byte {final["bits_per_byte"]:.4f} (loss {final["loss"]:.4f}) on the whole '
    f"'validation' split ({final['eval_s']:.0f} s), weights of step {final['step']}"
  )


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_resumed_run_says_so_and_appends_to_startup_txt(workdir, capfd):
  if not os.path.exists(os.path.join(workdir, 'summary.json')):  # run alone: train first
    train_and_evaluate(_tiny_config(), workdir)
  capfd.readouterr()
  train_and_evaluate(_tiny_config(num_train_steps=30), workdir)
  rows = _printed_block(capfd.readouterr().out)
  assert rows['workdir'] == f'{os.path.abspath(workdir)} (resumes from step 20)'
  with open(os.path.join(workdir, 'startup.txt')) as f:
    assert f.read().count('workdir ') == 2


def test_sharding_line_names_what_each_mesh_axis_splits():
  config = tiny.get_config()
  config.mesh_shape = (4, 2)
  assert make_runtime(config).describe() == (
    'mesh data=4 model=2: batch over data; heads, mlp, vocab over model'
  )
  config.fsdp = True
  assert 'batch, embed over data' in make_runtime(config).describe()
  config.parallelism = 'pmap'
  assert make_runtime(config).describe().startswith('pmap over 8 local devices')


def test_classifier_eval_line_shows_accuracy_and_patience_left():
  early = EarlyStopping(patience=3)
  early.on_eval(100, 0.40)
  early.on_eval(200, 0.45)
  line = console.eval_line(
    200, 400, {'loss': 1.1, 'accuracy': 0.6}, task='classify', early=early, monitor='error'
  )
  assert line == (
    'eval step 200/400  val loss 1.1000  accuracy 0.6000  best error 0.4000 at step 100  '
    'patience 2/3 left'
  )
  final = {'split': 'test', 'step': 100, 'loss': 0.9, 'accuracy': 0.625}
  assert console.final_line(final, 'classify') == (
    "final: accuracy 0.6250 (loss 0.9000) on the whole 'test' split, weights of step 100"
  )


def test_attention_kernel_follows_the_model_choice():
  cfg = types.SimpleNamespace(
    attention_impl='auto', max_len=256, attention_dropout_rate=0.0, compute_dtype=jax.numpy.float32
  )
  assert console.attention_kernel(cfg, 'lm').startswith('causal blocks')  # CPU, >= 128 positions
  cfg.max_len = 32
  assert (
    console.attention_kernel(cfg, 'lm') == 'dot_product_attention, XLA kernel; attention_impl=auto'
  )
  cfg.attention_impl = 'einsum'
  assert console.attention_kernel(cfg, 'translate') == (
    'encoder einsum, decoder einsum; attention_impl=einsum'
  )
