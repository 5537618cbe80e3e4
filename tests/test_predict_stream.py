"""python -m jaxformer.predict on large inputs: rows are read batch by batch, and the output file
appears only whole. A stand-in classifier (no training, no JAX model) keeps these to a second;
tests/test_files_training.py runs predict on trained models."""

import json
import os

import numpy as np
import pytest

from jaxformer import inference, predict
from jaxformer.data import readers
from jaxformer.data.tokenizers import ByteTokenizer


class Model:
  """A 2-class 'classifier': logits from each row's length; counts rows read at each call."""

  def __init__(self, fail_at_call=None):
    self.rows_read_at_call, self.fail_at_call = [], fail_at_call

  def apply(self, variables, tokens):
    self.rows_read_at_call.append(CountingRow.made)
    if len(self.rows_read_at_call) == self.fail_at_call:
      raise KeyboardInterrupt  # as if the user pressed Ctrl-C half-way
    n = (np.asarray(tokens) != 0).sum(1)
    return np.stack([n, -n], 1).astype(np.float32)


class CountingRow(readers.Row):
  made = 0

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    CountingRow.made += 1


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
  """predict.main on a stand-in run: returns (model, input path, output path)."""
  CountingRow.made = 0
  monkeypatch.setattr(readers, 'Row', CountingRow)
  model = Model()

  def load(path):
    config = {'dataset': {'text_key': 'text'}, 'label_names': ['long', 'short']}
    model_config = type('Cfg', (), {'max_len': 16})()
    return inference.Loaded(
      path, 'classify', model, {}, ByteTokenizer(), model_config, config, 2, 1
    )

  monkeypatch.setattr(inference, 'load', load)
  path = tmp_path / 'new.csv'
  path.write_text('text\n' + ''.join(f'row {i}\n' for i in range(1000)))
  return model, str(path), str(tmp_path / 'pred.jsonl')


def run(inp, out, *extra):
  return predict.main(['--workdir', 'run', '--input', inp, '--output', out, *extra])


def test_rows_are_read_one_batch_at_a_time(fake_run):
  model, inp, out = fake_run
  assert run(inp, out, '--batch_size', '10') == 0
  # The whole file was not parsed before the first batch went through the model, nor later.
  assert model.rows_read_at_call[:3] == [10, 20, 30]
  assert len(model.rows_read_at_call) == 100
  rows = [json.loads(line) for line in open(out)]
  assert [r['line'] for r in rows] == list(range(2, 1002))
  assert rows[0]['text'] == 'row 0' and rows[0]['label'] == 'long'


def test_interrupted_predict_leaves_no_output(fake_run):
  model, inp, out = fake_run
  model.fail_at_call = 3
  with pytest.raises(KeyboardInterrupt):
    run(inp, out, '--batch_size', '10')
  assert sorted(os.listdir(os.path.dirname(out))) == ['new.csv']  # no output, no temporary file


def test_existing_output_is_kept_without_overwrite(fake_run, capsys):
  model, inp, out = fake_run
  with open(out, 'w') as f:
    f.write('mine\n')
  assert run(inp, out) == 2
  assert capsys.readouterr().err.strip() == (
    f"error: --output '{out}' already exists; choose another file, delete it, or pass --overwrite"
  )
  assert open(out).read() == 'mine\n' and model.rows_read_at_call == []
  assert run(inp, out, '--overwrite', '--batch_size', '500') == 0
  assert len(open(out).readlines()) == 1000


def test_lm_prompts_of_different_lengths_continue_in_one_generate_call(monkeypatch):
  """A batch of LM rows is one generate call (prompts right-padded, with their lengths), not one
  call, and one compiled shape, per distinct prompt length; each row's continuation starts right
  after its own prompt."""
  from types import SimpleNamespace

  from jaxformer import decode

  tok = ByteTokenizer()
  calls = []

  def generate(model, params, prompt, *, prompt_lengths=None, max_new_tokens, **kw):
    prompt = np.asarray(prompt)
    calls.append((prompt.shape, None if prompt_lengths is None else list(prompt_lengths)))
    out = np.zeros((prompt.shape[0], prompt.shape[1] + max_new_tokens), np.int32)
    lengths = prompt_lengths if prompt_lengths is not None else [prompt.shape[1]] * len(prompt)
    for row, n in enumerate(lengths):  # each row continues with 'x', then its own length as 'a'+n
      out[row, :n] = prompt[row, :n]
      out[row, n : n + max_new_tokens] = tok.encode('x' + chr(ord('a') + n))[:max_new_tokens]
    return out

  monkeypatch.setattr(decode, 'generate', generate)
  loaded = SimpleNamespace(
    tokenizer=tok, model_config=SimpleNamespace(max_len=32), model=None, params=None
  )
  texts = ['a', 'abc', 'abcdefg', 'ab']
  batch = [readers.Row(line=i + 2, fields={'text': t}) for i, t in enumerate(texts)]
  args = SimpleNamespace(max_new_tokens=2, seed=0, temperature=0.0)
  out = predict._continue(loaded, batch, args, 'new.csv')
  assert len(calls) == 1
  assert [r['continuation'] for r in out] == ['x' + chr(ord('a') + len(t) + 1) for t in texts]
  assert [r['line'] for r in out] == [2, 3, 4, 5]
