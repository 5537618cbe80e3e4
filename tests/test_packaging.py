"""jaxformer installs like a library: shipped configs by name, user configs, config-file errors.

The slow test builds a wheel, installs it into a fresh virtual environment and trains, samples
and loads a user's config from an empty directory, where nothing of the checkout is importable.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest
import setuptools
from helpers import REPO

from jaxformer.training import main


def test_pyproject_lists_every_package():
  tomllib = pytest.importorskip('tomllib')
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    tool = tomllib.load(f)['tool']['setuptools']
  found = setuptools.find_packages(REPO, include=['jaxformer*'])
  assert sorted(tool['packages']) == sorted(found + ['jaxformer.configs'])
  assert tool['package-dir'] == {'jaxformer.configs': 'configs'}
  for pattern in tool['package-data']['jaxformer']:
    assert glob.glob(os.path.join(REPO, 'jaxformer', pattern)), pattern


def test_a_bare_config_name_is_a_shipped_config(tmp_path, monkeypatch):
  import jaxformer.configs.tiny

  monkeypatch.chdir(tmp_path)
  assert main.resolve_config_arg('tiny') == jaxformer.configs.tiny.__file__
  assert main.resolve_config_arg('tiny:arg') == jaxformer.configs.tiny.__file__ + ':arg'
  for path in ('my.py', 'sub/my.py', 'configs/tiny.py'):
    assert main.resolve_config_arg(path) == path
  with pytest.raises(ValueError, match='shipped: default, .*tiny'):
    main.resolve_config_arg('tiyn')


BAD_CONFIGS = {
  'syntax': ('from jaxformer.configs import default\n\n\ndef get_config(:\n', 4, 'SyntaxError'),
  'import': ('import os\nfrom jaxformer.configs import nonexistent\n', 2, 'ImportError'),
  'raises': (
    'from jaxformer.configs import default\n\n\ndef get_config():\n'
    '  c = default.get_config()\n  raise RuntimeError("no GPU here")\n',
    6,
    'RuntimeError: no GPU here',
  ),
  'value': (
    'def get_config():\n  return int("x")\n',
    2,
    'ValueError: invalid literal',
  ),
}


@pytest.mark.parametrize('kind', sorted(BAD_CONFIGS))
def test_a_broken_config_file_exits_2_naming_its_file_and_line(tmp_path, capsys, kind):
  source, line, needle = BAD_CONFIGS[kind]
  path = tmp_path / f'my_{kind}.py'
  path.write_text(source)
  # In-process: the error comes from parsing the command line, before anything is built.
  code = main.main(['train.py', f'--config={path}', f'--workdir={tmp_path / "run"}'])
  lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
  assert code == 2 and len(lines) == 1, lines
  assert f'{path}, line {line}: ' in lines[0] and needle in lines[0], lines[0]
  assert not (tmp_path / 'run').exists()


USER_CONFIG = """\
from jaxformer.configs import default


def get_config():
  c = default.get_config()
  c.dataset.tokenizer = 'byte'
  c.dataset.test_split = ''
  c.model.update(d_model=32, num_heads=2, num_layers=1, max_len=32)
  c.update(batch_size=8, num_train_steps=2, eval_every_steps=2, eval_steps=1, warmup_steps=1)
  c.update(sample_tokens=0, progress=False)
  return c
"""


def _run(args, cwd, env, timeout=600):
  proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f'{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
  return proc


@pytest.mark.slow
def test_a_wheel_installs_trains_samples_and_loads_user_configs_from_anywhere(tmp_path):
  # Build from a copy of the package sources, so nothing is written into the checkout.
  src = tmp_path / 'src'
  for name in ('jaxformer', 'configs'):
    shutil.copytree(os.path.join(REPO, name), src / name, ignore=shutil.ignore_patterns('__py*'))
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(REPO, name), src / name)
  pip = [sys.executable, '-m', 'pip']
  _run([*pip, 'wheel', '-q', '--no-deps', '-w', str(tmp_path / 'dist'), str(src)], tmp_path, None)
  (wheel,) = glob.glob(str(tmp_path / 'dist' / 'jaxformer-*.whl'))

  # A fresh venv; its dependencies come from this interpreter's site-packages (a .pth file, which
  # does not run this environment's editable-install hook), jaxformer only from the wheel.
  venv = tmp_path / 'venv'
  _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], tmp_path, None)
  python = str(venv / 'bin' / 'python')
  _run([*pip, '--python', python, 'install', '-q', '--no-deps', wheel], tmp_path, None)
  (venv_site,) = glob.glob(str(venv / 'lib' / 'python*' / 'site-packages'))
  deps = [p for p in sys.path if os.path.basename(p) in ('site-packages', 'dist-packages')]
  with open(os.path.join(venv_site, 'dependencies.pth'), 'w') as f:
    f.write('\n'.join(deps) + '\n')

  work = tmp_path / 'empty'
  work.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONSAFEPATH')}
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'
  where = _run(
    [python, '-c', 'import jaxformer.configs as c; print(c.__file__)'], work, env
  ).stdout.strip()
  assert where.startswith(venv_site), where  # the wheel's copy, not the checkout's

  train = str(venv / 'bin' / 'jaxformer-train')
  steps = ['--config.num_train_steps=4', '--config.eval_every_steps=4', '--config.sample_tokens=0']
  _run([train, '--config=tiny', '--workdir=lm', *steps], work, env)
  assert os.path.exists(work / 'lm' / 'summary.json')
  sample = _run(
    [python, '-m', 'jaxformer.generate', '--workdir', 'lm', '--max_new_tokens', '8'], work, env
  )
  assert sample.stdout.strip()

  (work / 'my.py').write_text(USER_CONFIG)
  _run([train, '--config=my.py', '--workdir=mine'], work, env)
  assert os.path.exists(work / 'mine' / 'summary.json')
