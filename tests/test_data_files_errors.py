"""Each bad user file gets one line naming the file, the line and the field; nothing is written."""

import json
import os
import signal

import pytest
from helpers import run_train

from jaxformer.data import DataError
from jaxformer.data.files import FilesSource


def rows_text(n=30, classes=('a', 'b', 'c')):
  return 'text,label\n' + ''.join(f'row {i},{classes[i % len(classes)]}\n' for i in range(n))


def open_files(tmp_path, files: dict, task='classify', **cfg):
  """Writes `files` (name -> text or bytes) and opens them; returns the one-line error."""
  for name, content in files.items():
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
  cfg = {k: (str(tmp_path / v) if k.endswith('_files') else v) for k, v in cfg.items()}
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(DataError) as e:
    FilesSource({'train_files': str(tmp_path / 'train.csv'), **cfg}, task)
  assert sorted(os.listdir(tmp_path)) == before  # nothing written
  message = str(e.value)
  assert '\n' not in message
  return message


def test_missing_column(tmp_path):
  msg = open_files(tmp_path, {'train.csv': rows_text()}, label_key='category')
  assert f'{tmp_path}/train.csv: line 1: no column ' in msg and "'category'" in msg
  assert 'columns: text, label' in msg and 'dataset.label_key' in msg


def test_missing_jsonl_key(tmp_path):
  lines = [json.dumps({'text': 'x', 'label': 'a'}), json.dumps({'text': 'y', 'lbl': 'b'})]
  msg = open_files(tmp_path, {'t.jsonl': '\n'.join(lines)}, train_files='t.jsonl')
  assert 't.jsonl: line 2: no key ' in msg and "'label'" in msg


def test_empty_text(tmp_path):
  msg = open_files(tmp_path, {'train.csv': 'text,label\nfine,a\n   ,b\n'})
  assert "train.csv: line 3: field 'text' is empty" in msg


def test_row_with_a_different_number_of_fields(tmp_path):
  msg = open_files(tmp_path, {'train.csv': 'text,label\nfine,a\nhello, world,b\n'})
  assert 'train.csv: line 3: 3 fields, but the file has 2 columns' in msg


def test_non_utf8_bytes_give_line_and_byte_offset(tmp_path):
  data = 'text,label\ncaf\u00e9,a\n'.encode() + 'na\u00efve,b\n'.encode('latin-1')
  msg = open_files(tmp_path, {'train.csv': data})
  assert 'train.csv: line 3: invalid UTF-8 at byte offset 21' in msg  # 11 + 8 + 'na'


def test_eval_label_the_training_file_lacks(tmp_path):
  dev = 'text,label\nok,a\nodd,zzz\n'
  msg = open_files(tmp_path, {'train.csv': rows_text(), 'dev.csv': dev}, eval_files='dev.csv')
  assert "dev.csv: line 3: label 'zzz' in field 'label' is not a class" in msg


def test_test_label_the_training_file_lacks(tmp_path):
  test = 'text,label\nodd,q\n'
  msg = open_files(tmp_path, {'train.csv': rows_text(), 'test.csv': test}, test_files='test.csv')
  assert "test.csv: line 2: label 'q'" in msg


def test_fewer_than_two_classes(tmp_path):
  msg = open_files(tmp_path, {'train.csv': rows_text(classes=('only',))})
  assert "train.csv: field 'label' has 1 class ('only'); classification needs at least 2" in msg


def test_class_too_small_for_a_stratified_split(tmp_path):
  text = rows_text(20, ('a', 'b')) + 'lonely,c\n'
  msg = open_files(tmp_path, {'train.csv': text}, val_fraction=0.1, test_fraction=0.1)
  assert "train.csv: class 'c' (field 'label') has 1 rows" in msg and 'needs at least 3' in msg


def test_empty_file(tmp_path):
  msg = open_files(tmp_path, {'train.csv': ''})
  assert msg.startswith(f'{tmp_path}/train.csv: the file is empty')


def test_header_only_file(tmp_path):
  msg = open_files(tmp_path, {'train.csv': 'text,label\n'})
  assert 'train.csv: the file has a header but no rows' in msg


def test_glob_that_matches_nothing(tmp_path):
  msg = open_files(tmp_path, {'train.csv': rows_text()}, eval_files='dev*.csv')
  assert f"dataset.eval_files='{tmp_path}/dev*.csv' matches no files" in msg


def test_headerless_csv_with_named_keys(tmp_path):
  msg = open_files(tmp_path, {'train.csv': 'good movie,pos\nbad movie,neg\n'})
  assert "train.csv: line 1 names no column 'text', 'label'" in msg and 'no header row' in msg


def test_bad_file_through_train_py_exits_2_and_writes_nothing(tmp_path):
  (tmp_path / 'train.csv').write_text('text,label\nfine,a\n   ,b\n')
  workdir = tmp_path / 'run'
  proc = run_train(
    '--config=configs/genre_scratch.py',
    '--config.dataset.name=files',
    f'--config.dataset.train_files={tmp_path}/train.csv',
    f'--workdir={workdir}',
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
    f"error: {tmp_path}/train.csv: line 3: field 'text' is empty; fill it or remove the row"
  )
  assert not workdir.exists()


@pytest.mark.parametrize(
  'change,said',
  [
    (lambda r: r.pop('held_out'), "no field 'held_out'"),
    (lambda r: r.update(settings=[]), 'settings is list'),
    (lambda r: r['files'].update(train=[5]), 'files.train[0] is int'),
    (lambda r: r['held_out'].update(validation=['1']), 'held_out.validation[0] is str'),
    (lambda r: r.update(label_names='ab'), 'label_names is str'),
  ],
)
def test_a_malformed_split_record_is_one_data_error(tmp_path, change, said):
  from jaxformer.data import load_split_record

  (tmp_path / 'train.csv').write_text(rows_text())
  record = FilesSource({'train_files': str(tmp_path / 'train.csv')}, 'classify').record
  run = tmp_path / 'run'
  run.mkdir()
  change(record)
  (run / 'data_split.json').write_text(json.dumps(record))
  with pytest.raises(DataError) as e:
    load_split_record(str(run))
  assert str(e.value).startswith(f'{run}/data_split.json is malformed') and said in str(e.value)
  assert '\n' not in str(e.value)


def test_a_split_record_that_is_not_a_file_inside_the_run_is_refused(tmp_path):
  from jaxformer.data import load_label_names, load_split_record

  outside = tmp_path / 'outside.json'
  outside.write_text('{"label_names": ["a", "b"]}')
  run = tmp_path / 'run'
  run.mkdir()
  os.mkfifo(run / 'data_split.json')  # opening it would block for ever: the alarm ends that

  def hung(signum, frame):
    raise TimeoutError('load_split_record blocked on a FIFO')

  previous = signal.signal(signal.SIGALRM, hung)
  signal.alarm(10)
  try:
    with pytest.raises(DataError, match='not a regular file'):
      load_split_record(str(run))
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
  os.symlink(outside, run / 'labels.json')
  with pytest.raises(DataError, match='points outside the run or export'):
    load_label_names(str(run))
