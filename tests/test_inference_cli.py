"""generate / translate / evaluate on tiny trained runs, from the workdir and from an export."""

import json
import math
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO

from jaxformer import evaluate, export, generate, translate

LM_ARGS = [
  '--config=configs/tiny.py',
  # No sample in the training report: these tests sample through the CLIs, and compiling the
  # report's decoder would cost the fixture about 15% of its CPU time.
  '--config.sample_tokens=0',
]
TRANSLATE_ARGS = [
  '--config=configs/numbers_translate.py',
  '--config.model.d_model=32',
  '--config.model.num_encoder_layers=1',
  '--config.model.num_decoder_layers=1',
  '--config.num_train_steps=20',
  '--config.eval_every_steps=10',
  '--config.batch_size=16',
  '--config.progress=false',
]


def _env():
  env = dict(os.environ)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'
  return env


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Trains the tiny LM and the tiny translator at the same time (two processes)."""
  root = tmp_path_factory.mktemp('inference_runs')
  dirs = {'lm': str(root / 'lm'), 'translate': str(root / 'translate')}
  procs = {
    name: subprocess.Popen(
      [sys.executable, 'train.py', *args, f'--workdir={dirs[name]}'],
      cwd=REPO,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for name, args in (('lm', LM_ARGS), ('translate', TRANSLATE_ARGS))
  }
  for name, proc in procs.items():
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f'train.py ({name}) failed:\n{err[-3000:]}'
  return dirs


def _run(main, argv, capsys):
  code = main(argv)
  out, err = capsys.readouterr()
  return code, out, err


# ----- language model -----------------------------------------------------------------------


def test_generate_prints_reproducible_text_from_workdir_and_export(runs, tmp_path, capsys):
  argv = ['--workdir', runs['lm'], '--prompt', 'ROMEO:', '--max_new_tokens', '12', '--seed', '3']
  code, first, err = _run(generate.main, argv, capsys)
  assert code == 0, err
  assert first.startswith('ROMEO:') and len(first.strip()) > len('ROMEO:')
  assert _run(generate.main, argv, capsys)[1] == first  # same seed, same text
  assert _run(generate.main, argv[:-1] + ['4'], capsys)[1] != first  # other seed, other text

  out_dir = str(tmp_path / 'export')
  assert export.main(['--workdir', runs['lm'], '--out', out_dir]) == 0
  capsys.readouterr()
  code, from_export, err = _run(generate.main, ['--workdir', out_dir] + argv[2:], capsys)
  assert code == 0, err
  assert from_export == first


def test_generate_several_prompts_of_different_lengths_as_each_alone(runs, tmp_path, capsys):
  prompts = ['ROMEO:', 'O', 'Good morrow, cousin']
  base = ['--workdir', runs['lm'], '--max_new_tokens', '8', '--temperature', '0']
  repeated = [arg for prompt in prompts for arg in ('--prompt', prompt)]
  code, together, err = _run(generate.main, base + repeated, capsys)
  assert code == 0, err
  alone = []
  for prompt in prompts:
    code, out, err = _run(generate.main, base + ['--prompt', prompt], capsys)
    assert code == 0, err
    alone.append(out[:-1])  # print's newline
  assert together == '\n---------------\n'.join(alone) + '\n'
  assert all(text.startswith(prompt) for text, prompt in zip(alone, prompts))

  prompt_file = tmp_path / 'prompts.txt'
  prompt_file.write_text('\n'.join(prompts) + '\n', encoding='utf-8')
  code, from_file, err = _run(generate.main, base + ['--prompt_file', str(prompt_file)], capsys)
  assert code == 0, err
  assert from_file == together

  (tmp_path / 'empty.txt').write_text('', encoding='utf-8')
  (tmp_path / 'latin1.txt').write_bytes('caf\xe9\n'.encode('latin-1'))
  for bad, message in (
    (['--prompt', 'A', '--prompt_file', str(prompt_file)], 'not both'),
    (['--prompt_file', str(tmp_path / 'missing.txt')], 'missing.txt'),
    (['--prompt_file', str(tmp_path / 'empty.txt')], 'empty.txt is empty'),
    (['--prompt_file', str(tmp_path / 'latin1.txt')], 'latin1.txt: not UTF-8'),
  ):
    code, out, err = _run(generate.main, base + bad, capsys)
    assert code == 2 and out == '' and err.count('\n') == 1 and message in err, err


def test_generate_command_line_error_is_one_line_and_exit_2(runs):
  """The real `python -m` entry point (the other tests call main() in-process, for speed)."""
  cmd = [sys.executable, '-m', 'jaxformer.generate', '--workdir', runs['lm'], '--max_new_tokens']
  bad = subprocess.run(cmd + ['500'], cwd=REPO, env=_env(), capture_output=True, text=True)
  assert bad.returncode == 2 and bad.stdout == ''
  assert bad.stderr.count('\n') == 1 and bad.stderr.startswith('error: --max_new_tokens 500')


def test_evaluate_lm_reproduces_the_training_validation_loss(runs, capsys):
  workdir = runs['lm']
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  # tiny.py evaluates eval_steps=2 batches of 8 windows: the first 16 of the validation split.
  code, out, err = _run(evaluate.main, ['--workdir', workdir, '--limit', '16'], capsys)
  assert code == 0, err
  result = json.load(open(os.path.join(workdir, 'eval_validation.json')))
  assert result['task'] == 'lm' and result['split'] == 'validation' and result['num_examples'] == 16
  assert result['loss'] == pytest.approx(summary['best_val_loss'], rel=1e-4)
  assert result['perplexity'] == pytest.approx(math.exp(result['loss']))
  assert 0 < result['bits_per_byte'] < 16
  assert 'eval_validation.json' in out


def test_evaluate_errors_are_one_line_and_write_nothing(runs, capsys):
  workdir = runs['lm']
  code, _, err = _run(evaluate.main, ['--workdir', workdir, '--split', 'nope'], capsys)
  assert code == 2 and err.count('\n') == 1 and 'nope' in err
  assert not os.path.exists(os.path.join(workdir, 'eval_nope.json'))
  code, _, err = _run(translate.main, ['--workdir', workdir, 'hello'], capsys)
  assert code == 2 and "'lm' model" in err
  code, _, err = _run(evaluate.main, ['--workdir', os.path.join(workdir, 'missing')], capsys)
  assert code == 2 and err.count('\n') == 1
  os.mkdir(os.path.join(workdir, 'eval_train.json'))  # the result file cannot be written
  try:
    code, _, err = _run(
      evaluate.main, ['--workdir', workdir, '--split', 'train', '--limit', '8'], capsys
    )
  finally:
    os.rmdir(os.path.join(workdir, 'eval_train.json'))
  assert code == 2 and err.count('\n') == 1 and err.startswith('error: could not write ')
  assert 'eval_train.json' in err and not [f for f in os.listdir(workdir) if 'tmp' in f]


def test_names_moved_out_of_inference_are_still_importable_from_it():
  """decode_rows and the command-line plumbing moved to data.tokenizers and cli; old code works."""
  from jaxformer import cli, inference
  from jaxformer.data import tokenizers
  from jaxformer.training import writers

  assert inference.decode_rows is tokenizers.decode_rows
  assert inference.until_eos is tokenizers.until_eos
  assert (inference.Parser, inference.UsageError) == (cli.Parser, cli.UsageError)
  assert inference.run_cli is cli.run_cli
  assert inference.write_json_atomic is writers.write_json_atomic
  with pytest.raises(AttributeError, match='no attribute'):
    _ = inference.no_such_name


# ----- translation --------------------------------------------------------------------------


def test_translate_prints_one_line_per_input(runs, capsys):
  args = ['--workdir', runs['translate'], 'twenty-three', 'one hundred and five']
  code, beam, err = _run(translate.main, args, capsys)
  assert code == 0, err
  assert len(beam.splitlines()) == 2
  code, greedy, _ = _run(translate.main, args + ['--greedy'], capsys)
  assert code == 0 and len(greedy.splitlines()) == 2


def test_evaluate_translate_reports_exact_match_and_bleu(runs, capsys):
  workdir = runs['translate']
  # Batches of 2, like the two sentences above: the compiled decoders are reused.
  code, _, err = _run(
    evaluate.main, ['--workdir', workdir, '--limit', '8', '--batch_size', '2'], capsys
  )
  assert code == 0, err
  result = json.load(open(os.path.join(workdir, 'eval_test.json')))
  assert result['split'] == 'test' and result['num_examples'] == 8
  for key in ('exact_match', 'exact_match_greedy', 'exact_match_beam'):
    assert 0.0 <= result[key] <= 1.0
  for key in ('bleu', 'bleu_greedy', 'bleu_beam'):
    assert 0.0 <= result[key] <= 100.0
  assert result['exact_match'] == result['exact_match_beam'] and result['loss'] > 0
  assert len(result['examples']) == 5 and {'source', 'target', 'greedy', 'beam'} <= set(
    result['examples'][0]
  )


# ----- classification (a hand-made run: random weights, saved like a trained one) -----------


@pytest.fixture(scope='module')
def classify_run(runs, tmp_path_factory):
  from jaxformer.checkpoint import Checkpointer
  from jaxformer.config import ModelConfig
  from jaxformer.data import ByteTokenizer
  from jaxformer.models import Classifier

  config = json.load(open(os.path.join(runs['lm'], 'config.json')))
  config.update(task='classify', num_classes=3, batch_size=32)
  config['dataset'].update(name='jaxformer_genre', tokenizer='byte', test_split='test')
  workdir = str(tmp_path_factory.mktemp('classify') / 'run')
  os.makedirs(workdir)
  json.dump(config, open(os.path.join(workdir, 'config.json'), 'w'))
  ByteTokenizer().save(os.path.join(workdir, 'tokenizer'))
  model = Classifier(ModelConfig.from_dict(config['model']), num_classes=3)
  params = jax.jit(lambda key: nn.unbox(model.init(key, jnp.ones((1, 32), jnp.int32))['params']))(
    jax.random.key(0)
  )
  params = jax.tree.map(lambda x: x * 5.0, params)  # decisive, varied predictions
  with Checkpointer(os.path.join(workdir, 'checkpoints'), async_save=False) as ckpt:
    ckpt.save(1, {'params': params}, val_loss=1.0, wait=True)
  return workdir


def test_evaluate_classify_writes_metrics_and_confusion_png(classify_run, capsys):
  code, _, err = _run(
    evaluate.main, ['--workdir', classify_run, '--split', 'test', '--limit', '96'], capsys
  )
  assert code == 0, err
  result = json.load(open(os.path.join(classify_run, 'eval_test.json')))
  matrix = np.array(result['confusion_matrix'])
  assert matrix.shape == (3, 3) and matrix.sum() == result['num_examples'] == 96
  assert result['accuracy'] == pytest.approx(np.trace(matrix) / 96)
  recall = np.diag(matrix) / matrix.sum(1)
  assert result['balanced_accuracy'] == pytest.approx(recall[matrix.sum(1) > 0].mean())
  assert (
    set(result['per_class_f1']) == set(result['label_names']) and len(result['label_names']) == 3
  )
  with open(os.path.join(classify_run, 'confusion_test.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
