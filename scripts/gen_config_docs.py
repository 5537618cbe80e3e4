"""Writes docs/configs.md from configs/default.py: every field, its default and its comment.

    python scripts/gen_config_docs.py            # regenerate docs/configs.md
    python scripts/gen_config_docs.py --check    # exit 1 if docs/configs.md is out of date (CI)

The source of truth is configs/default.py, where every field is one assignment with one comment:
    c.batch_size = 32                # global batch (split over data-parallel devices and hosts)
Fields set inside a helper (`m.d_model = ...` in get_model_config) get the prefix of the field the
helper's result is assigned to in get_config (`c.model = get_model_config()` -> `model.d_model`).
A field without a comment is an error: the docs must explain every field. The shipped configs
(configs/*.py) are listed with the fields they change, read from their get_config().
"""

from __future__ import annotations

import argparse
import ast
import importlib
import io
import os
import sys
import tokenize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(REPO, 'configs', 'default.py')
MODEL_CONFIG = os.path.join(REPO, 'jaxformer', 'config.py')
OUT = os.path.join(REPO, 'docs', 'configs.md')
SECTIONS = (
  ('', 'Training'),
  ('early_stopping.', 'Early stopping'),
  ('dataset.', 'Dataset'),
  ('model.', 'Model (jaxformer.ModelConfig)'),
)


def _comments(source: str) -> dict[int, str]:
  """line number -> text of the comment on that line."""
  out = {}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      out[tok.start[0]] = tok.string.lstrip('#').strip()
  return out


def _dotted(node: ast.AST) -> list[str] | None:
  """`c.early_stopping.patience` -> ['c', 'early_stopping', 'patience']."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if isinstance(node, ast.Name):
    return [node.id] + parts[::-1]
  return None


def model_config_fields(source: str) -> list[tuple[str, str, str]]:
  """(name, default as written, comment) of every field of `class ModelConfig` in config.py."""
  tree = ast.parse(source)
  comments = _comments(source)
  (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == 'ModelConfig']
  rows = []
  for node in cls.body:
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
      comment = comments.get(node.end_lineno, '')
      if not comment:
        raise ValueError(
          f'jaxformer/config.py:{node.lineno}: ModelConfig.{node.target.id} has no comment; '
          'add one saying what it means'
        )
      rows.append((node.target.id, ast.get_source_segment(source, node.value), comment))
  return rows


def fields(source: str) -> list[tuple[str, str, str]]:
  """(key, default as written, comment) for every field assignment in default.py, in file order.

  A helper that starts from `ModelConfig()` has ModelConfig's fields (documented in
  jaxformer/config.py), then the assignments that change them.
  """
  tree = ast.parse(source)
  comments = _comments(source)
  functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
  # Which helper's result becomes which sub-config: `c.model = get_model_config()` -> 'model.'.
  prefixes = {'get_config': ''}
  for node in ast.walk(functions['get_config']):
    if (
      isinstance(node, ast.Assign)
      and isinstance(node.value, ast.Call)
      and isinstance(node.value.func, ast.Name)
      and node.value.func.id in functions
    ):
      prefixes[node.value.func.id] = '.'.join(_dotted(node.targets[0])[1:]) + '.'
  rows = []
  for name, func in functions.items():
    if name not in prefixes:
      continue
    base = {}
    if any(isinstance(n, ast.Name) and n.id == 'ModelConfig' for n in ast.walk(func)):
      # Only the ModelConfig fields the helper keeps (LoRA's come from their own section).
      kept = importlib.import_module('jaxformer.configs.default').__dict__[name]().keys()
      with open(MODEL_CONFIG) as f:
        for field, value, comment in model_config_fields(f.read()):
          if field in kept:
            base[prefixes[name] + field] = (value, comment)
    for node in func.body:
      if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
        continue
      path = _dotted(node.targets[0])
      if path is None or len(path) < 2:
        continue
      value = ast.get_source_segment(source, node.value)
      if isinstance(node.value, ast.Call):
        continue  # a sub-config (ConfigDict() or a helper's result), not a field
      key = prefixes[name] + '.'.join(path[1:])
      comment = comments.get(node.end_lineno, '')
      if not comment:
        raise ValueError(
          f'configs/default.py:{node.lineno}: field {key} has no comment; '
          'add one saying what it means'
        )
      if key in base:
        base[key] = (value, comment)
      else:
        rows.append((key, value, comment))
    rows += [(key, value, comment) for key, (value, comment) in base.items()]
  return rows


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _shipped_configs() -> list[tuple[str, str, dict]]:
  """(file name, first docstring line, {key: value} changed from default) for configs/*.py."""
  default = _flatten(importlib.import_module('jaxformer.configs.default').get_config().to_dict())
  out = []
  for fname in sorted(os.listdir(os.path.join(REPO, 'configs'))):
    if not fname.endswith('.py') or fname in ('__init__.py', 'default.py'):
      continue
    module = importlib.import_module(f'jaxformer.configs.{fname[:-3]}')
    values = _flatten(module.get_config().to_dict())
    changed = {k: v for k, v in values.items() if default.get(k) != v}
    doc = (module.__doc__ or '').strip().splitlines()[0] if module.__doc__ else ''
    out.append((fname, doc, changed))
  return out


def _cell(text: str) -> str:
  return text.replace('|', '\\|')


def render() -> str:
  with open(DEFAULT) as f:
    rows = fields(f.read())
  lines = [
    '# Config reference',
    '',
    # Each item is one line of the output; long ones are split in the source only.
    '<!-- Generated by scripts/gen_config_docs.py from configs/default.py: '
    'do not edit by hand. -->',
    '',
    'Every field `train.py` understands, with its default in `configs/default.py` '
    'and what it means.',
    'Override any of them on the command line, e.g.',
    '`python train.py --config=configs/tiny.py --config.model.num_layers=3 '
    '--config.dataset.tokenizer=byte`,',
    'or in Python on the `ml_collections.ConfigDict` that `get_config()` returns before calling',
    '`jaxformer.training.train_and_evaluate(config, workdir)`. '
    'Invalid values fail before anything is',
    'compiled or written, with one line naming the field (exit code 2). '
    'The model fields are checked',
    'by `jaxformer.ModelConfig` '
    '(see [jaxformer/config.py](../jaxformer/config.py) for every rule).',
    '',
  ]
  for prefix, title in SECTIONS:
    section = [
      r
      for r in rows
      if r[0].startswith(prefix)
      and not any(p and p != prefix and r[0].startswith(p) for p, _ in SECTIONS)
    ]
    if not section:
      continue
    lines += [f'## {title}', '', '| field | default | meaning |', '|---|---|---|']
    lines += [
      f'| `{key}` | `{_cell(value)}` | {_cell(comment)} |' for key, value, comment in section
    ]
    lines.append('')
  documented = {r[0] for r in rows}
  shipped = _shipped_configs()
  default = _flatten(importlib.import_module('jaxformer.configs.default').get_config().to_dict())
  missing = sorted(set(default) - documented)
  if missing:
    raise ValueError(
      f'configs/default.py: fields {missing} were not found as commented assignments'
    )
  lines += [
    '## Shipped configs',
    '',
    '`python train.py --config=configs/NAME.py`; each file starts from `default.py` and changes',
    'only the fields listed here.',
    '',
    '| config | what it is | fields changed from default |',
    '|---|---|---|',
  ]
  for fname, doc, changed in shipped:
    diff = ', '.join(f'`{k}={v!r}`' for k, v in changed.items())
    lines.append(f'| [`{fname}`](../configs/{fname}) | {_cell(doc)} | {_cell(diff)} |')
  lines.append('')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--check', action='store_true', help='exit 1 if docs/configs.md is out of date'
  )
  args = parser.parse_args(argv)
  text = render()
  if args.check:
    current = open(OUT).read() if os.path.exists(OUT) else ''
    if current != text:
      print(
        'docs/configs.md is out of date: run python scripts/gen_config_docs.py', file=sys.stderr
      )
      return 1
    print('docs/configs.md is up to date')
    return 0
  os.makedirs(os.path.dirname(OUT), exist_ok=True)
  with open(OUT, 'w') as f:
    f.write(text)
  print(f'wrote {os.path.relpath(OUT, REPO)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
