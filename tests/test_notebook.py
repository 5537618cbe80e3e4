"""The Colab notebook runs top to bottom, headless, in tiny mode (what CI checks on every change).

The kernel is this test's own interpreter (sys.executable), started through a kernelspec written
to a temporary JUPYTER_PATH, so a system-wide 'python3' kernel can never be picked up instead. It
inherits conftest's environment (the prepared data dir, the compilation cache) except the device
count: 2 simulated CPU devices still take the heads-sharded branch (as a Colab v2-8 does) and
compile and run much faster on a 2-core machine than 8.
"""

import json
import os
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'notebooks', 'colab_tpu.ipynb')
KERNEL = 'jaxformer-test'


def _kernelspec(root) -> str:
  spec_dir = root / 'kernels' / KERNEL
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(
    json.dumps(
      {
        'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'jaxformer tests',
        'language': 'python',
      }
    )
  )
  return str(root)


def _outputs(nb, output_type=None):
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if output_type is None or out['output_type'] == output_type:
        yield out


def test_committed_notebook_is_stripped_and_has_the_badge():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert 'colab.research.google.com/github/' in nb.cells[0].source
  assert 'notebooks/colab_tpu.ipynb' in nb.cells[0].source
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert all(not c.outputs and c.execution_count is None for c in code), (
    'strip the outputs before committing'
  )


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_notebook_runs_in_tiny_mode(tmp_path, monkeypatch):
  monkeypatch.setenv('JAXFORMER_TINY', '1')
  monkeypatch.setenv('JAXFORMER_NOTEBOOK_WORKDIR', str(tmp_path / 'runs'))
  monkeypatch.setenv('JUPYTER_PATH', _kernelspec(tmp_path / 'jupyter'))
  monkeypatch.setenv(
    'XLA_FLAGS',
    re.sub(r'--xla_force_host_platform_device_count=\d+', '', os.environ.get('XLA_FLAGS', ''))
    + ' --xla_force_host_platform_device_count=2',
  )
  monkeypatch.setenv(
    'PYTHONPATH', os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')]))
  )
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # Started from notebooks/, as Jupyter would; the notebook finds the repository itself.
  client = NotebookClient(
    nb,
    kernel_name=KERNEL,
    timeout=240,
    allow_errors=False,
    resources={'metadata': {'path': os.path.join(REPO, 'notebooks')}},
  )
  client.execute()  # raises CellExecutionError, with the traceback, if any cell fails

  text = '\n'.join(out.get('text', '') for out in _outputs(nb, 'stream'))
  assert 'tiny mode: True' in text
  assert '2 device(s)' in text
  assert 'heads [0]' in text and 'heads [1]' in text  # 2 heads over a 'model' axis of 2
  assert 'ROMEO:' in text  # sampled text
  assert 'fine-tuned from the LM' in text and 'from scratch' in text
  images = [o for o in _outputs(nb) if 'image/png' in o.get('data', {})]
  assert len(images) >= 6  # 4 live loss plots, the attention heads, the comparison
  for run in ('numbers_translate', 'shakespeare_lm', 'genre_finetune', 'genre_scratch'):
    workdir = tmp_path / 'runs' / 'tiny' / run
    assert (workdir / 'summary.json').exists(), run
    assert (workdir / 'partitioning.json').exists(), run
  with open(tmp_path / 'runs' / 'tiny' / 'genre_finetune' / 'config.json') as f:
    assert json.load(f)['init_from'].endswith('shakespeare_lm')
