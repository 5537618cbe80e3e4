"""The layers point one way: config -> model -> data / checkpoint -> training -> command lines.

Every module of the package (and every script of the repository that imports it) is given a
layer below; a module may import its own layer or lower ones, never a higher one, and never a
private (`_name`) helper of another module. Imports inside functions count too: a late import
still ties the layers together. A new module fails here until it is given a layer.

The command lines' shared helpers (jaxformer.cli, jaxformer.inference) are in the top layer, so
the library (training included) never imports command-line code.
"""

from __future__ import annotations

import ast
import os

import pytest
from helpers import REPO

# (layer, rank, module prefixes). Same rank, different layer: neither may import the other.
LAYERS = (
  # host_memory: process set-up that the package root runs before anything imports jax; it
  # imports nothing of jaxformer.
  ('config', 0, ('jaxformer.config', 'jaxformer.configs', 'configs', 'jaxformer.host_memory')),
  ('model', 1, ('jaxformer.model', 'jaxformer.models', 'jaxformer.sharding', 'jaxformer.decode')),
  (
    'model',
    1,
    ('jaxformer.metrics', 'jaxformer.analysis', 'jaxformer.analysis_seq2seq', 'jaxformer.plotting'),
  ),
  ('data', 2, ('jaxformer.data',)),
  ('checkpoint', 2, ('jaxformer.checkpoint',)),
  ('training', 3, ('jaxformer.training',)),
  (
    'command lines and experiments',
    4,
    (
      'jaxformer.training.main',
      # What the command lines share: argument parsing and one-line errors (cli), loading a
      # trained run for inference (inference). Training never imports either.
      'jaxformer.cli',
      'jaxformer.inference',
      'jaxformer.generate',
      'jaxformer.translate',
      'jaxformer.evaluate',
      'jaxformer.export',
      'jaxformer.hf',
      'jaxformer.predict',
      'jaxformer.bench',
      'jaxformer.bench_models',
      'jaxformer.experiments',
      'train',
      'scripts',
      'bench',
    ),
  ),
)
SOURCES = ('jaxformer', 'configs', 'scripts', 'bench', 'train.py')


def layer_of(module: str) -> tuple[str, int] | None:
  """(layer, rank) of a dotted module name by its longest matching prefix; None if unknown."""
  if module == 'jaxformer':  # the package root: host_memory's settings, then ModelConfig
    return ('config', 0)
  best = None
  for name, rank, prefixes in LAYERS:
    for prefix in prefixes:
      if module == prefix or module.startswith(prefix + '.'):
        if best is None or len(prefix) > best[0]:
          best = (len(prefix), name, rank)
  return best and best[1:]


def _is_module(root: str, module: str) -> bool:
  path = os.path.join(root, *module.split('.'))
  return os.path.isfile(path + '.py') or os.path.isdir(path)


def imports(path: str, module: str, root: str = REPO) -> list[tuple[int, str, list[str]]]:
  """(line, imported module, imported names) of every import in a file, relative ones resolved."""
  tree = ast.parse(open(path, encoding='utf-8').read(), path)
  package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name, []) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = package.split('.')[: len(package.split('.')) - node.level + 1]
        base = '.'.join(parts + ([base] if base else []))
      for alias in node.names:
        # `from jaxformer import inference` imports the module jaxformer.inference.
        if _is_module(root, f'{base}.{alias.name}'):
          found.append((node.lineno, f'{base}.{alias.name}', []))
        else:
          found.append((node.lineno, base, [alias.name]))
  return found


def violations(path: str, module: str, root: str = REPO) -> list[str]:
  """Why `module` (in file `path`) breaks the layering: one line per bad import."""
  own = layer_of(module)
  if own is None:
    return [f'{module} has no layer: add it to LAYERS in tests/test_layers.py']
  bad = []
  for line, target, names in imports(path, module, root):
    if not (target == 'jaxformer' or target.split('.')[0] in ('jaxformer', 'configs')):
      continue  # a third-party or standard library module
    theirs = layer_of(target)
    where = f'{os.path.relpath(path, root)}:{line}'
    if theirs is None:
      bad.append(f'{where}: {target} has no layer')
    elif theirs[1] > own[1] or (theirs[1] == own[1] and theirs[0] != own[0]):
      bad.append(f'{where}: {module} ({own[0]}) imports {target} ({theirs[0]})')
    private = [n for n in names if n.startswith('_') and not n.startswith('__')]
    if private and target != module:
      bad.append(f'{where}: {module} imports private {", ".join(private)} of {target}')
  return bad


def source_files(root: str = REPO):
  """(path, dotted module name) of every Python file under SOURCES."""
  for top in SOURCES:
    start = os.path.join(root, top)
    if os.path.isfile(start):
      yield start, top[: -len('.py')]
      continue
    for folder, _, files in os.walk(start):
      for file in sorted(files):
        if file.endswith('.py'):
          rel = os.path.relpath(os.path.join(folder, file), root)[: -len('.py')]
          module = rel.replace(os.sep, '.').removesuffix('.__init__')
          yield os.path.join(folder, file), module


def test_no_module_imports_a_higher_layer_or_a_private_helper():
  bad = [v for path, module in source_files() for v in violations(path, module)]
  assert not bad, '\n'.join(bad)


@pytest.mark.parametrize(
  'module, source, expected',
  [
    ('jaxformer.model.fake', 'from jaxformer.training import loop\n', 'imports'),
    ('jaxformer.data.fake', 'def f():\n  from jaxformer.checkpoint import manager\n', 'imports'),
    ('jaxformer.training.report', 'from jaxformer import cli\n', 'imports jaxformer.cli'),
    ('jaxformer.training.fake', 'from jaxformer.cli import Parser\n', 'imports jaxformer.cli'),
    ('jaxformer.training.fake', 'from jaxformer import inference\n', 'imports jaxformer.infer'),
    ('jaxformer.checkpoint.fake', 'from .manager import _short\n', 'private _short'),
    ('jaxformer.nowhere', 'import os\n', 'has no layer'),
    (
      'jaxformer.training.fake',
      'from jaxformer import models\nfrom jaxformer.data import x\n',
      None,
    ),
    (
      'jaxformer.generate',
      'from jaxformer import cli, inference\nimport jaxformer.training\n',
      None,
    ),
  ],
)
def test_the_checker_catches_upward_and_private_imports(tmp_path, module, source, expected):
  """The checker itself: each bad import is reported, a good one is not."""
  for package in ('jaxformer/training', 'jaxformer/checkpoint'):
    os.makedirs(tmp_path / package, exist_ok=True)
  for name in ('cli.py', 'inference.py', 'models.py', 'training/loop.py', 'checkpoint/manager.py'):
    (tmp_path / 'jaxformer' / name).write_text('')
  path = tmp_path / 'fake.py'
  path.write_text(source)
  bad = violations(str(path), module, str(tmp_path))
  if expected is None:
    assert not bad
  else:
    assert len(bad) == 1 and expected in bad[0], bad
