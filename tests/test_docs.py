"""The docs stay true: docs/configs.md matches configs/default.py, the README's Python example runs,
and every link between the repository's markdown files points at a file that exists."""

import contextlib
import glob
import io
import json
import os
import re

import pytest
from helpers import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKDOWN = [os.path.join(REPO, 'README.md')] + sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))
_FENCE = re.compile(r'^(```|~~~).*?^\1', re.S | re.M)
_LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')


def _gen_config_docs():
  return load_script('scripts/gen_config_docs.py')


def test_configs_md_is_up_to_date():
  gen = _gen_config_docs()
  with open(gen.OUT) as f:
    assert f.read() == gen.render(), (
      'docs/configs.md is stale: run python scripts/gen_config_docs.py'
    )


def test_every_default_field_is_documented():
  gen = _gen_config_docs()
  with open(gen.DEFAULT) as f:
    keys = [key for key, _, _ in gen.fields(f.read())]
  for key in (
    'batch_size',
    'early_stopping.patience',
    'dataset.tokenizer',
    'model.num_heads',
    'model.dtype',
  ):
    assert key in keys
  assert len(keys) == len(set(keys))


def test_gen_config_docs_rejects_a_field_without_a_comment():
  gen = _gen_config_docs()
  source = (
    'def get_config():\n'
    '  c = X()\n'
    '  c.lr = 1e-3   # peak learning rate\n'
    '  c.steps = 10\n'
    '  return c\n'
  )
  with pytest.raises(ValueError, match='steps has no comment'):
    gen.fields(source)


def test_readme_python_example_runs():
  with open(os.path.join(REPO, 'README.md')) as f:
    blocks = re.findall(r'^```python\n(.*?)^```', f.read(), re.S | re.M)
  assert blocks, 'README.md has no ```python example'
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    for block in blocks:
      exec(compile(block, 'README.md', 'exec'), {'__name__': '__readme__'})
  assert out.getvalue().strip(), 'the README example should print its result'


def _links(path):
  with open(path) as f:
    text = _FENCE.sub('', f.read())  # links inside code blocks are examples, not links
  text = re.sub(r'`[^`\n]*`', '', text)  # nor are links inside inline code
  for target in _LINK.findall(text):
    if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I) or target.startswith('#'):
      continue  # http(s), mailto, ... and anchors within the page
    yield target.split('#', 1)[0]


@pytest.mark.parametrize('path', MARKDOWN, ids=[os.path.relpath(p, REPO) for p in MARKDOWN])
def test_intra_repo_links_resolve(path):
  missing = [t for t in _links(path) if not os.path.exists(os.path.join(os.path.dirname(path), t))]
  assert not missing, f'{os.path.relpath(path, REPO)} links to missing files: {missing}'


def test_link_checker_sees_links():
  readme = list(_links(os.path.join(REPO, 'README.md')))
  assert 'docs/configs.md' in readme


_SECTION = re.compile(r'^## [0-9a-z]+\. ([a-z_]+)[:：]', re.M)


def _quoted_answers(path):
  """{experiment: the blockquote after its 'Measured answer' heading}, from one experiments page."""
  with open(path) as f:
    text = f.read()
  heads = list(_SECTION.finditer(text))
  answers = {}
  for head, after in zip(heads, heads[1:] + [None]):
    section = text[head.end() : after.start() if after else len(text)]
    lines = section.splitlines()
    starts = [
      i for i, line in enumerate(lines) if line in ('**Measured answer.**', '**实测回答。**')
    ]
    if not starts:
      continue
    quote = []
    for line in lines[starts[0] + 1 :]:
      if line.startswith('>'):
        quote.append(line[2:] if line.startswith('> ') else line[1:])
      elif quote:
        break
    answers[head.group(1)] = '\n'.join(quote)
  return answers


@pytest.mark.parametrize('page', ['experiments.md', 'experiments.zh.md'])
def test_experiment_answers_are_quoted_word_for_word(page):
  """Each 'Measured answer' is its docs/experiments/NAME.json answer, unchanged."""
  answers = _quoted_answers(os.path.join(REPO, 'docs', page))
  assert len(answers) >= 6, sorted(answers)
  for name, quoted in answers.items():
    with open(os.path.join(REPO, 'docs', 'experiments', f'{name}.json')) as f:
      assert quoted == json.load(f)['answer'].strip(), f'{page}: {name} is not its JSON answer'
