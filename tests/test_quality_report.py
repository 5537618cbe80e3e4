"""docs/results.md is rendered from docs/results/results.json by bench/quality_report.py."""

import copy
import json
import os
import sys

import pytest
from helpers import REPO, load_script

write_markdown = load_script('bench/quality_report.py').write_markdown


def _render(results, tmp_path) -> str:
  path = tmp_path / 'results.md'
  write_markdown(results, str(path))
  return path.read_text()


def test_the_long_run_is_called_older_only_when_measured_at_another_date_or_commit(tmp_path):
  with open(os.path.join(REPO, 'docs', 'results', 'results.json')) as f:
    results = json.load(f)
  lm_measured = results['measured']['lm']
  same = copy.deepcopy(results)  # same date and commit, another note: measured together
  same['lm']['long_run']['measured'] = dict(lm_measured, note='a different note')
  assert 'The long-run column is older' not in _render(same, tmp_path)
  older = copy.deepcopy(results)
  older['lm']['long_run']['measured'] = dict(lm_measured, commit='0000000')
  assert 'The long-run column is older: measured' in _render(older, tmp_path)


def test_the_seed_table_gives_mean_spread_and_says_whether_the_runs_are_apart(tmp_path):
  def kind(*accuracy):
    per_seed = {str(i): {'balanced_accuracy': a} for i, a in enumerate(accuracy)}
    mean = sum(accuracy) / len(accuracy)
    std = (sum((a - mean) ** 2 for a in accuracy) / max(len(accuracy) - 1, 1)) ** 0.5
    return {
      'per_seed': per_seed,
      'mean': mean,
      'std': std,
      'min': min(accuracy),
      'max': max(accuracy),
    }

  seeds = {'init_from': 'runs/shakespeare_lm', 'examples_per_class': 100}
  apart = dict(seeds, finetune=kind(0.62, 0.64, 0.66), scratch=kind(0.44, 0.45, 0.49))
  md = _render({'genre_seeds': apart, 'measured': {}}, tmp_path)
  assert '| pretrained + fine-tuned | 0.620 | 0.640 | 0.660 | 0.640 ± 0.020 | 0.620–0.660 |' in md
  assert 'Fine-tuning minus scratch: +0.180 on the mean; the ranges do not overlap' in md
  assert 'Target >= 0.65 from the default LM, on the mean: missed (0.640)' in md
  close = dict(seeds, finetune=kind(0.62, 0.66, 0.67), scratch=kind(0.60, 0.63, 0.64))
  md = _render({'genre_seeds': close, 'measured': {}}, tmp_path)
  assert 'overlap: not distinguishable' in md and 'on the mean: met (0.650)' in md
  one = dict(seeds, finetune=kind(0.62, 0.64, 0.66), scratch=dict(kind(0.45), std=None))
  md = _render({'genre_seeds': one, 'measured': {}}, tmp_path)
  assert '| from scratch | 0.450 | — | — | 0.450 (1 seed) | 0.450–0.450 |' in md
  assert 'Scratch ran 1 of the 3 seeds' in md
  assert 'previous default LM' not in md
  before = {
    'lm': '256 wide, 850 steps',
    'finetune': kind(0.61, 0.605, 0.59),
    'scratch': kind(0.45, 0.47, 0.48),
    'measured': {'date': '2026-12-02', 'commit': '58ae27d'},
  }
  older = dict(before, lm='128 wide', measured={'date': '2026-11-30', 'commit': '1234567'})
  md = _render({'genre_seeds': dict(apart, earlier_defaults=[before, older])}, tmp_path)
  assert (
    'Before, on the previous default LM (256 wide, 850 steps), measured 2026-12-02 at commit '
    '58ae27d: fine-tuned 0.602 ± 0.010, from scratch 0.467 ± 0.015 (its shape), over seeds '
    '0, 1, 2.' in md
  )
  assert md.index('(256 wide, 850 steps)') < md.index('Before, on an earlier default LM (128 wide)')


def test_the_fine_tuning_table_names_the_best_and_worst_method_per_size(tmp_path):
  def row(accuracy, trainable):
    return {'balanced_accuracy': accuracy, 'trainable_params': trainable, 'total_params': 1000}

  peft = {
    'full': {'30': dict(row(0.65, 1000), step_s=3.7), '100': dict(row(0.66, 1000), step_s=3.8)},
    'head_only': {'30': dict(row(0.64, 1), step_s=1.1), '100': dict(row(0.70, 1), step_s=1.1)},
  }
  md = _render({'peft': peft, 'measured': {}}, tmp_path)
  assert (
    '| full fine-tuning (`configs/genre_finetune.py`) | 0.650 | 0.660 | 1,000 (100%) | 3800 ms |'
    in md
  )
  assert (
    '- 30 per class: highest full fine-tuning (0.650), lowest head only (0.640): a spread of 0.010.'
    in md
  )
  assert '- 100 per class: highest head only (0.700), lowest full fine-tuning (0.660)' in md
  assert 'For scale' not in md  # no seed runs to compare with


def test_a_systematic_split_states_the_steps_its_rows_trained(tmp_path):
  def row(steps):
    scores = {'exact_match_greedy': 1.0, 'exact_match_beam': 1.0, 'errors': []}
    return {'label': 'x', 'test': scores, 'test_iid': scores, 'train_wall_s': 1.0, 'steps': steps}

  same = {'shipped': row(1200), 'depth_1': row(1200)}
  md = _render({'numbers_unseen_pairs_bytes': same, 'measured': {}}, tmp_path)
  assert 'Same data, tokenizer and 1200-step schedule for every row' in md
  assert 'Unseen pairs minus like training (beam 4): x +0.000; x +0.000.' in md
  mixed = {'shipped': row(1200), 'depth_1': row(700)}
  md = _render({'numbers_unseen_pairs_bytes': mixed, 'measured': {}}, tmp_path)
  assert 'Same data, tokenizer and schedule for every row' in md and '700-step' not in md


def test_the_levers_table_compares_with_the_previous_default_and_says_what_it_measured(tmp_path):
  def row(label, bits, steps, beside=None):
    return {
      'label': label,
      'overrides': ['--config.batch_size=16'] if label == 'old' else [],
      'bits_per_byte': bits,
      'steps': steps,
      'wall_s': 2000.0,
      'tokens_per_s': 1700.0,
      'ran_beside': beside,
    }

  levers = {
    'previous_default': row('old', 2.035, 850, 'default'),
    'default': row('new', 1.971, 2535, 'previous_default'),
    'lr3e-3': row('one change', 1.979, 2535),
  }
  lm = {'default_run': {'steps': 850}}
  md = _render({'lm_levers': levers, 'measured': {}}, tmp_path)
  assert '| new | none | 1.971 | -0.064 | +0.000 | 2535 | 2000 s | 1700 | previous_default |' in md
  # A row after the default changes one thing in it: the default is what it is compared with.
  assert '| one change | none | 1.979 | -0.056 | +0.008 | 2535 | 2000 s | 1700 | — |' in md
  assert 'Lowest row: new, 1.971 (above the target).' in md
  assert 'section above measured the previous default' not in md  # no LM part to speak of
  section = load_script('bench/quality_levers.py').section  # with an LM part, on its own
  lines = section(levers, [], lm)
  assert any('section above measured the previous default (850 steps)' in x for x in lines)
  same = section(levers, [], {'default_run': {'steps': 2535}})  # it measured this default
  assert not any('section above measured' in x for x in same)
  levers['default']['bits_per_byte'] = 1.94
  assert 'Lowest row: new, 1.940 (at or under the target).' in section(levers, [], lm)
  assert not any('seeds' in x for x in section(levers, [], lm))  # one seed: nothing to average
  # A rerun of the default with another seed: the verdict on the mean may differ from the row's.
  # lr3e-3 has no overrides here either: the default, not it, names the seed-1 rerun.
  levers['seed1'] = dict(row('new, seed 1', 1.97, 2535), overrides=['--config.seed=1'])

  def seed_lines():
    return [x for x in section(levers, [], lm) if ' over seeds ' in x]

  assert seed_lines() == [
    'The default over seeds 0, 1: 1.9400, 1.9700, mean 1.9550: target missed on the mean.'
  ]
  # Any other row's reruns too, whatever the order of the overrides, each seed once, in seed
  # order; a mean just above the line shows four decimals; a rerun with no seed-0 row is left out.
  levers['seed1']['bits_per_byte'] = 1.9602
  levers['lr3e-3']['overrides'] = ['--config.learning_rate=3e-3', '--config.warmup_steps=9']
  rerun = ['--config.seed=2', '--config.warmup_steps=9', '--config.learning_rate=3e-3']
  levers['lr3e-3_seed2'] = dict(row('one change, seed 2', 1.98, 2535), overrides=rerun)
  levers['lr3e-3_seed2_again'] = dict(row('again', 1.99, 2535), overrides=rerun)
  levers['orphan_seed1'] = dict(
    row('orphan', 1.9, 2535), overrides=['--config.b=1', '--config.seed=1']
  )
  assert seed_lines() == [
    'The default over seeds 0, 1: 1.9400, 1.9602, mean 1.9501: target missed on the mean.',
    'The lr3e-3 row over seeds 0, 2: 1.9790, 1.9800, mean 1.9795.',
  ]


def test_a_retrained_lever_loses_its_hand_recorded_pairing(monkeypatch):
  levers = load_script('bench/quality_levers.py')
  summary = {'final': {'bits_per_byte': 2.0}, 'last_step': 850, 'wall_s': 2197.0}
  summary.update(tokens_per_s=1692.0, load=2.1)
  monkeypatch.setattr(levers, 'train', lambda *a, **k: dict(summary))
  old = {'previous_default': {'wall_s': 2197.0, 'steps': 850, 'ran_beside': 'default'}}
  rows = levers.measure('runs', slugs=('previous_default',), out=old)
  assert rows['previous_default']['ran_beside'] == 'default'  # the same run, reused
  summary['wall_s'] = 2300.0  # trained again: nobody has recorded what ran beside it
  rows = levers.measure('runs', slugs=('previous_default',), out=old)
  assert rows['previous_default']['ran_beside'] is None


def test_fine_tuning_settings_are_chosen_on_validation_not_on_test(monkeypatch, tmp_path):
  genre = load_script('bench/quality_genre.py')
  # (validation accuracies of the run's evaluations, test balanced accuracy) per workdir
  runs = {
    'genre_finetune_100_seed0': ([0.70, 0.74, 0.72], 0.64),
    'genre_finetune_100_seed1': ([0.71, 0.70], 0.62),
    'genre_finetune_100_wide_seed0': ([0.66, 0.69], 0.68),
    'genre_finetune_100_wide_seed1': ([0.70, 0.67], 0.66),
  }
  calls = []

  def genre_run(kind, n, workdir, init_from, *extra):
    calls.append((os.path.basename(workdir), extra))
    return {'balanced_accuracy': runs[os.path.basename(workdir)][1]}

  def val_rows(workdir):
    return [{'accuracy': a} for a in runs[os.path.basename(workdir)][0]]

  monkeypatch.setattr(genre, 'genre_run', genre_run)
  monkeypatch.setattr(genre, 'val_rows', val_rows)
  settings = {'shipped': ('as shipped', ()), 'wide': ('wider', ('--config.x=1',))}
  out = genre.genre_settings('runs', 'runs/lm', settings=settings, seeds=(0, 1))
  # 'shipped' reuses genre_seeds' workdirs and arguments; the others add their overrides.
  assert calls[0] == ('genre_finetune_100_seed0', ('--config.seed=0',))
  assert calls[3] == ('genre_finetune_100_wide_seed1', ('--config.seed=1', '--config.x=1'))
  shipped = out['settings']['shipped']
  assert shipped['per_seed']['0']['val_accuracy'] == 0.74  # the best evaluation: what was kept
  assert round(shipped['val']['mean'], 3) == 0.725 and round(shipped['test']['mean'], 3) == 0.63
  md = _render({'genre_settings': out, 'measured': {}}, tmp_path)
  assert '| wider | `--config.x=1` | 0.695 ± 0.007 | 0.670 ± 0.014 | 0.680 | 0.660 |' in md
  # The higher test mean does not choose: validation does.
  assert 'Highest mean validation accuracy: as shipped (0.725).' in md
  assert 'setting kept (as shipped, 0.630): missed.' in md
  # A validation lead inside the shipped setting's seed spread (0.021) does not replace it...
  runs['genre_finetune_100_wide_seed0'] = ([0.74], 0.68)
  runs['genre_finetune_100_wide_seed1'] = ([0.73], 0.66)
  out = genre.genre_settings('runs', 'runs/lm', settings=settings, seeds=(0, 1))
  md = _render({'genre_settings': out, 'measured': {}}, tmp_path)
  assert 'Highest mean validation accuracy: wider (0.735).' in md
  assert "+0.010, is within the shipped setting's seed spread (0.021): the shipped" in md
  assert 'setting kept (as shipped, 0.630): missed.' in md
  # ...a lead above it does.
  runs['genre_finetune_100_wide_seed1'] = ([0.78], 0.66)
  out = genre.genre_settings('runs', 'runs/lm', settings=settings, seeds=(0, 1))
  md = _render({'genre_settings': out, 'measured': {}}, tmp_path)
  assert "+0.035, is above the shipped setting's seed spread (0.021): it is the one" in md
  assert 'setting kept (wider, 0.670): met.' in md
  # One seed gives no spread to weigh a lead against: the shipped setting stays.
  out = genre.genre_settings('runs', 'runs/lm', settings=settings, seeds=(1,))
  md = _render({'genre_settings': out, 'measured': {}}, tmp_path)
  assert 'cannot be weighed: the shipped setting ran one seed' in md
  assert 'setting kept (as shipped, 0.620): missed.' in md
  # The same table from a second LM run has its own section, which names that LM.
  second = genre.genre_settings('runs2', 'runs/lm2', settings=settings, seeds=(1,), lm_label='LM 2')
  md = _render(
    {'genre_settings': out, 'genre_settings_second_lm': second, 'measured': {}}, tmp_path
  )
  assert '## Fine-tuning settings at 100 per class over 1 seeds, from LM 2' in md
  assert 'fine-tunes LM 2 (`--config.init_from=runs/lm2`)' in md
  assert md.count('Highest mean validation accuracy') == 2


def test_the_quality_bench_never_deletes_a_run_it_did_not_start(tmp_path, monkeypatch, capsys):
  # The bench's default LM directory used to be the Quickstart's runs/shakespeare_lm: a run of
  # the user's own, without the bench's signature file, must survive, and the bench stops.
  runs = load_script('bench/quality_runs.py')
  trained = []

  def fake_train_py(cmd, **kwargs):
    workdir = next(a.split('=', 1)[1] for a in cmd if a.startswith('--workdir='))
    trained.append(workdir)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      f.write('{"new": true}')
    return runs.subprocess.CompletedProcess(cmd, 0)

  monkeypatch.setattr(runs.subprocess, 'run', fake_train_py)
  mine = tmp_path / 'shakespeare_lm'
  mine.mkdir()
  (mine / 'summary.json').write_text('{"mine": true}')
  for fresh in (False, True):
    with pytest.raises(SystemExit) as exit_info:
      runs.train(str(mine), 'configs/shakespeare_lm.py', fresh=fresh)
    assert exit_info.value.code == 2 and not trained
  assert (mine / 'summary.json').read_text() == '{"mine": true}'
  assert str(mine) in capsys.readouterr().err
  # Its own runs are still redone when their config or overrides change.
  ours = tmp_path / 'ours'
  ours.mkdir()
  (ours / 'quality_signature.txt').write_text('the signature of an older config')
  (ours / 'summary.json').write_text('{"old": true}')
  assert runs.train(str(ours), 'configs/shakespeare_lm.py', fresh=False)['new'] is True
  assert trained == [str(ours)]


def test_the_quality_bench_checks_its_arguments_before_running_any_part(
  tmp_path, monkeypatch, capsys
):
  quality = load_script('bench/quality.py')

  def ran(*args, **kwargs):
    raise AssertionError('a part started: the argument checks let this through')

  # Should a check regress, nothing trains and nothing under docs/ is written: the test fails.
  for name in ('_commit', 'train', 'numbers', 'genre_settings', 'write_markdown'):
    monkeypatch.setattr(quality, name, ran)
  monkeypatch.setattr(quality, 'DOCS', str(tmp_path / 'docs'))

  def bench(*args, cwd=REPO):
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, 'argv', ['bench.quality', '--runs', str(tmp_path / 'runs'), *args])
    with pytest.raises(SystemExit) as exit_info:
      quality.main()
    return exit_info.value.code, capsys.readouterr().err

  code, err = bench('--only', 'genre_settings_second_lm')
  assert code == 2 and 'needs --second_lm=DIR' in err
  code, err = bench('--only', 'genre_setings')  # a typo would otherwise run nothing, silently
  assert code == 2 and 'unknown part(s) genre_setings' in err
  code, err = bench('--only', 'numbers', cwd=tmp_path)  # paths would miss the repository
  assert code == 2 and 'from the repository root' in err
  mine = tmp_path / 'my_lm'
  mine.mkdir()
  (mine / 'summary.json').write_text('{}')
  code, err = bench('--only', 'numbers', '--pretrained', str(mine))
  assert code == 2 and f'{mine} holds files bench.quality did not write' in err
  assert (mine / 'summary.json').read_text() == '{}'
  assert not (tmp_path / 'docs').exists()
