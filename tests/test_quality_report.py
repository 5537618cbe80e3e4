"""docs/results.md is rendered from docs/results/results.json by bench/quality_report.py."""

import copy
import json
import os

from helpers import REPO, load_script

write_markdown = load_script('bench/quality_report.py').write_markdown


def _render(results, tmp_path) -> str:
  path = tmp_path / 'results.md'
  write_markdown(results, str(path))
  return path.read_text()


def test_the_30_minute_lm_is_called_older_only_when_measured_at_another_date_or_commit(tmp_path):
  with open(os.path.join(REPO, 'docs', 'results', 'results.json')) as f:
    results = json.load(f)
  lm_measured = results['measured']['lm']
  same = copy.deepcopy(results)  # same date and commit, another note: measured together
  same['lm']['long_run']['measured'] = dict(lm_measured, note='a different note')
  assert 'The 30-minute column is older' not in _render(same, tmp_path)
  older = copy.deepcopy(results)
  older['lm']['long_run']['measured'] = dict(lm_measured, commit='0000000')
  assert 'The 30-minute column is older: measured' in _render(older, tmp_path)
