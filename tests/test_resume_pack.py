"""A run resumed with a different dataset.pack is refused: packed rows are other rows, so the
resumed data order would not be the run's. Through the command line (in-process), tiny LM."""

import hashlib
import json
import os

import pytest

from jaxformer.training import main

pytestmark = pytest.mark.slow  # a 2-step run to resume: ~10 s on 2 cores

# Config files rather than --config.* overrides: ml_collections defines the override flags once
# per process, so an in-process second command line could not repeat them.
CONFIG = """\
from jaxformer.configs import tiny


def get_config():
  c = tiny.get_config()
  c.num_train_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
  c.eval_steps, c.sample_tokens = 1, 0
  c.dataset.pack = {pack}
  return c
"""


def digest(workdir) -> str:
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(workdir)):
    for name in sorted(files):
      path = os.path.join(root, name)
      h.update(path.encode() + open(path, 'rb').read())
  return h.hexdigest()


def train(tmp_path, pack: bool) -> int:
  path = tmp_path / f'pack_{pack}.py'
  path.write_text(CONFIG.format(pack=pack))
  return main.main(['train.py', f'--config={path}', f'--workdir={tmp_path / "run"}'])


def refused(tmp_path, capsys) -> str:
  """The one error line of resuming with pack=True; checks exit 2 and that nothing changed."""
  capsys.readouterr()
  before = digest(tmp_path / 'run')
  assert train(tmp_path, True) == 2
  lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
  assert len(lines) == 1, lines
  assert digest(tmp_path / 'run') == before
  return lines[0]


def test_resume_with_another_pack_is_refused(tmp_path, capsys):
  assert train(tmp_path, False) == 0
  assert refused(tmp_path, capsys) == (
    'error: workdir holds a run with a different dataset.pack (false -> true); use a new '
    '--workdir or --config.overwrite=true'
  )
  # A run started before dataset.pack existed trained unpacked: packing it now is a change too.
  path = tmp_path / 'run' / 'config.json'
  saved = json.load(open(path))
  del saved['dataset']['pack']
  path.write_text(json.dumps(saved))
  assert 'dataset.pack (false -> true)' in refused(tmp_path, capsys)
