"""End to end on the user's own files: train (and fine-tune, resume, evaluate), then predict."""

import csv
import json
import os

import numpy as np
import pytest
from jaxformer.configs import tiny

from jaxformer import inference, predict
from jaxformer.data import DataError
from jaxformer.data.tokenizers import decode_rows
from jaxformer.training import train_and_evaluate

WORDS = {'alpha': 'sun moon star sky', 'beta': 'fish sea wave salt', 'gamma': 'tree leaf root moss'}

# Each test trains a tiny model end to end (tens of seconds on 2 cores): .ci/run runs them
# with `pytest -m slow`; tests/test_data_files*.py check the files source itself quickly.
pytestmark = pytest.mark.slow


def tiny_config(task, **dataset):
  c = tiny.get_config()
  c.task = task
  c.dataset.name = 'files'
  c.dataset.tokenizer = 'byte'
  c.dataset.test_split = ''
  for k, v in dataset.items():
    c.dataset[k] = v
  c.num_train_steps = 6
  c.eval_every_steps = 3
  c.checkpoint_every_steps = 3
  c.eval_steps = 0
  c.sample_tokens = 0
  return c


def write_labelled(path, n, seed):
  rng = np.random.default_rng(seed)
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['ticket', 'team'])
    for i in range(n):
      team = list(WORDS)[i % 3]
      words = rng.choice(WORDS[team].split(), 4)
      w.writerow([' '.join(words), team])
  return str(path)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('files_runs')
  (root / 'corpus.txt').write_text(''.join(f'{" ".join(WORDS.values())} {i}\n' for i in range(300)))
  lm = tiny_config('lm', train_files=str(root / 'corpus.txt'))
  train_and_evaluate(lm, str(root / 'lm'))
  train = write_labelled(root / 'train.csv', 90, 0)
  cls = tiny_config(
    'classify', train_files=train, text_key='ticket', label_key='team', test_fraction=0.1
  )
  cls.dataset.test_split = 'test'
  cls.init_from = str(root / 'lm')  # fine-tuned from the LM run, with its tokenizer
  cls.model.scan_layers = True
  cls_summary = train_and_evaluate(cls, str(root / 'cls'))
  pairs = [(f'{n} {WORDS["alpha"]}', f'{WORDS["beta"]} {n}') for n in range(80)]
  with open(root / 'pairs.tsv', 'w') as f:
    f.writelines(f'{s}\t{t}\n' for s, t in pairs)
  tr = tiny_config('translate', train_files=str(root / 'pairs.tsv'))
  # Trained past emitting only spaces, so that beam search and greedy decoding differ on its rows.
  tr.num_train_steps, tr.eval_every_steps, tr.checkpoint_every_steps = 30, 15, 15
  tr.learning_rate = 1e-2
  train_and_evaluate(tr, str(root / 'tr'))
  return root, cls, cls_summary


def test_classifier_run_records_labels_and_split(runs):
  root, _, summary = runs
  run = root / 'cls'
  assert json.load(open(run / 'labels.json')) == {'label_names': ['alpha', 'beta', 'gamma']}
  record = json.load(open(run / 'data_split.json'))
  assert record['num_examples'] == {'train': 72, 'validation': 9, 'test': 9}
  config = json.load(open(run / 'config.json'))
  assert config['num_classes'] == 3 and config['dataset']['test_split'] == 'test'
  assert 'test' in summary
  # evaluate reads the recorded rows: the 9 test rows, 3 per class
  from jaxformer.evaluate import evaluate

  result = evaluate(inference.load(str(run)), 'test')
  assert result['num_examples'] == 9 and np.sum(result['confusion_matrix'], 1).tolist() == [3] * 3


def test_resume_refuses_changed_split_settings_and_files(runs):
  root, cls, _ = runs
  changed = tiny_config('classify', **dict(cls.dataset.to_dict(), val_fraction=0.3))
  changed.init_from, changed.model.scan_layers = cls.init_from, True
  with pytest.raises(DataError, match='dataset.val_fraction changed since the run started'):
    train_and_evaluate(changed, str(root / 'cls'))


def run_predict(tmp_path, workdir, rows_text, name='new.csv', *extra):
  (tmp_path / name).write_text(rows_text)
  out = tmp_path / 'pred.jsonl'
  code = predict.main(
    ['--workdir', str(workdir), '--input', str(tmp_path / name), '--output', str(out), *extra]
  )
  return code, out


def test_predict_classify_matches_the_training_pipeline(runs, tmp_path):
  import jax

  from jaxformer.data import build_task_data

  root, cls, _ = runs
  loaded = inference.load(str(root / 'cls'))
  texts = [' '.join(WORDS[t].split()[:3]) for t in WORDS] * 3
  code, out = run_predict(
    tmp_path,
    root / 'cls',
    'ticket\n' + ''.join(t + '\n' for t in texts),
    'new.csv',
    '--batch_size',
    '4',
  )
  assert code == 0
  rows = [json.loads(line) for line in open(out)]
  assert [r['text'] for r in rows] == texts and [r['line'] for r in rows] == list(range(2, 11))
  for r in rows:
    assert abs(sum(r['probabilities'].values()) - 1) < 1e-4
    assert r['label'] == max(r['probabilities'], key=r['probabilities'].get)
  # The same probabilities as the training pipeline's rows of these texts (as an eval file).
  (tmp_path / 'dev.csv').write_text('ticket,team\n' + ''.join(f'{t},alpha\n' for t in texts))
  dataset = dict(cls.dataset.to_dict(), eval_files=str(tmp_path / 'dev.csv'), test_fraction=0.0)
  data = build_task_data(
    dataset,
    task='classify',
    max_len=loaded.model_config.max_len,
    batch_size=8,
    seed=0,
    tokenizer=loaded.tokenizer,
    process_index=0,
    process_count=1,
  )
  inputs = np.stack([data._row('validation', i)['inputs'] for i in range(len(texts))])
  probs = jax.nn.softmax(loaded.model.apply({'params': loaded.params}, inputs), -1)
  np.testing.assert_allclose(
    [[r['probabilities'][n] for n in ('alpha', 'beta', 'gamma')] for r in rows], probs, atol=1e-5
  )


def test_predict_translate_greedy_and_lm_continuation(runs, tmp_path):
  from jaxformer import decode, generate

  root = runs[0]
  sources = [f'{n} {WORDS["alpha"]}' for n in (3, 17, 200)]
  code, out = run_predict(
    tmp_path, root / 'tr', ''.join(s + '\n' for s in sources), 'new.txt', '--beam_size', '1'
  )
  assert code == 0
  rows = [json.loads(line) for line in open(out)]
  loaded = inference.load(str(root / 'tr'))
  src = inference.encode_sources(loaded.tokenizer, sources, loaded.model_config.max_len)
  tok = loaded.tokenizer
  greedy = decode.translate_greedy(
    loaded.model,
    loaded.params,
    src,
    max_len=loaded.model_config.max_len,
    bos_id=tok.bos_id,
    eos_id=tok.eos_id,
  )
  assert [r['translation'] for r in rows] == decode_rows(tok, np.asarray(greedy))
  prompts = ['sun', 'fish sea', 'tree']
  code, out = run_predict(
    tmp_path,
    root / 'lm',
    ''.join(p + '\n' for p in prompts),
    'p.txt',
    '--max_new_tokens',
    '8',
    '--overwrite',  # the translation's predictions are in the same file
  )
  assert code == 0
  rows = [json.loads(line) for line in open(out)]
  lm = inference.load(str(root / 'lm'))
  for p, r in zip(prompts, rows):
    (expected,) = generate.sample(lm, p, max_new_tokens=8, temperature=0.0)
    assert r['prompt'] == p and p + r['continuation'] == expected


def test_predict_translate_defaults_to_beam_search(runs, tmp_path):
  """Without --beam_size, predict translates with beam search (width 4, alpha 0.6): each output
  is decode.beam_search's on the row, decoded as predict decodes rows."""
  from jaxformer import decode

  root = runs[0]
  sources = [f'{n} {WORDS["alpha"]}' for n in (3, 17, 200, 41, 9)]
  code, out = run_predict(tmp_path, root / 'tr', ''.join(s + '\n' for s in sources), 'new.txt')
  assert code == 0
  rows = [json.loads(line) for line in open(out)]
  assert [r['source'] for r in rows] == sources
  loaded = inference.load(str(root / 'tr'))
  tok, length = loaded.tokenizer, loaded.model_config.max_len
  src = inference.encode_sources(tok, sources, length)
  common = dict(max_len=length, bos_id=tok.bos_id, eos_id=tok.eos_id)
  beam, _ = decode.beam_search(loaded.model, loaded.params, src, beam_size=4, alpha=0.6, **common)
  assert [r['translation'] for r in rows] == inference.decode_rows(tok, np.asarray(beam))
  # On these rows beam search and greedy disagree, so a predict that decoded greedily fails here.
  greedy = decode.translate_greedy(loaded.model, loaded.params, src, **common)
  assert inference.decode_rows(tok, np.asarray(greedy)) != [r['translation'] for r in rows]


def test_predict_bad_row_exits_2_and_keeps_the_old_output(runs, tmp_path, capsys):
  root = runs[0]
  (tmp_path / 'pred.jsonl').write_text('old\n')
  bad = 'ticket,id\nfine words,1\n  ,2\n'
  code, out = run_predict(tmp_path, root / 'cls', bad, 'new.csv', '--overwrite')
  assert code == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert (
    err == f"error: {tmp_path}/new.csv: line 3: field 'ticket' is empty; fill it or remove the row"
  )
  assert out.read_text() == 'old\n' and sorted(os.listdir(tmp_path)) == ['new.csv', 'pred.jsonl']
  code, _ = run_predict(tmp_path, root / 'cls', 'body\nx\n', 'new.csv', '--overwrite')
  assert code == 2 and "no column 'ticket'" in capsys.readouterr().err


def test_predict_missing_input_is_one_line(runs, tmp_path, capsys):
  args = ['--workdir', str(runs[0] / 'cls'), '--input', str(tmp_path / 'nope.csv')]
  assert predict.main([*args, '--output', str(tmp_path / 'out.jsonl')]) == 2
  err = capsys.readouterr().err.strip()
  assert (
    err
    == f"error: --input '{tmp_path}/nope.csv' is not a file; give a .csv, .tsv, .jsonl or .txt file"
  )
  assert os.listdir(tmp_path) == []


def test_preempted_mid_epoch_run_on_a_file_resumes_exactly(tmp_path):
  import signal

  train = write_labelled(tmp_path / 'train.csv', 90, 1)  # 81 training rows: 10 steps an epoch

  def config():
    c = tiny_config('classify', train_files=train, text_key='ticket', label_key='team')
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 14, 7, 7
    return c

  class PreemptAt:  # as if the machine sent SIGTERM after step 4 (mid-epoch, no checkpoint yet)
    def on_step(self, step, state):
      if step == 4:
        os.kill(os.getpid(), signal.SIGTERM)

  whole = train_and_evaluate(config(), str(tmp_path / 'whole'))
  first = train_and_evaluate(config(), str(tmp_path / 'cut'), callbacks=[PreemptAt()])
  assert first['preempted'] and first['last_step'] == 4
  resumed = train_and_evaluate(config(), str(tmp_path / 'cut'))
  assert resumed['last_step'] == 14 and not resumed['preempted']
  assert resumed['params_fingerprint'] == whole['params_fingerprint']
