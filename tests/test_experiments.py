"""python -m jaxformer.experiments: every experiment's --quick mode writes its PNG, JSON and answer;
the pieces they rest on (FLOP formula, parameter budgets, probe labels, the corpus slice) are
right."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxformer.experiments import (
  NAMES,
  Options,
  depth,
  depth_translation,
  ffn_width,
  heads_cost,
  number_words,
  overfitting,
  seeds,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
  """Every experiment with --quick, in one subprocess (one device, as on a laptop).

  One process lets the experiments share the tiny LM they analyse and XLA's compilation cache.
  """
  root = tmp_path_factory.mktemp('experiments')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'jaxformer.experiments',
      'all',
      '--quick',
      '--out',
      str(root / 'out'),
      '--runs',
      str(root / 'runs'),
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return root


@pytest.mark.slow  # `quick` runs every experiment (2-4 min): in `pytest -m slow` only
@pytest.mark.parametrize('name', NAMES)
def test_quick_mode_writes_png_json_and_answer(quick, name):
  out = quick / 'out'
  with open(out / f'{name}.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  payload = json.loads((out / f'{name}.json').read_text())
  assert payload['experiment'] == name and payload['quick'] is True
  assert payload['results'] and payload['answer'] and payload['wall_s'] > 0
  assert payload['machine']['cpu']
  snippet = (out / f'{name}.md').read_text()
  assert payload['answer'] in snippet and '--quick' in snippet


@pytest.mark.slow  # `quick` runs every experiment (2-4 min): in `pytest -m slow` only
def test_heads_cost_flops_are_identical_across_head_counts(quick):
  for length in (128, 512):
    costs = [heads_cost.analytic_cost(256, length, 4, h, num_layers=2) for h in (1, 2, 4, 8, 16)]
    for key in ('projection_flops', 'score_flops', 'matmul_flops'):
      assert len({c[key] for c in costs}) == 1, key
    # ... while the softmax work and the stored probabilities grow with the number of heads.
    assert [c['softmax_elements'] for c in costs] == [
      costs[0]['softmax_elements'] * h for h in (1, 2, 4, 8, 16)
    ]
  # The formula, by hand: d=256, L=128, B=1, one layer, train step = 3x forward.
  c = heads_cost.analytic_cost(256, 128, 1, 4)
  assert c['projection_flops'] == 3 * 8 * 128 * 256**2
  assert c['score_flops'] == 3 * 4 * 128**2 * 256
  rows = json.loads((quick / 'out' / 'heads_cost.json').read_text())['results']['rows']
  for length in {r['seq_len'] for r in rows}:
    assert len({r['matmul_flops'] for r in rows if r['seq_len'] == length}) == 1
  with pytest.raises(ValueError, match='divisible'):
    heads_cost.analytic_cost(256, 128, 1, 3)


@pytest.mark.slow  # `quick` runs every experiment (2-4 min): in `pytest -m slow` only
def test_heads_and_pretraining_results_are_complete(quick):
  heads = json.loads((quick / 'out' / 'heads.json').read_text())['results']
  n = heads['model']['num_layers'] * heads['model']['num_heads']
  assert len(heads['heads']) == n and len(heads['pruning_curve']) == n + 1
  assert heads['pruning_curve'][0] == pytest.approx(heads['baseline_loss'])
  assert os.path.exists(quick / 'out' / 'heads_maps.png')
  for h in heads['heads']:  # a bootstrap interval for every ablation cost
    assert h['delta_loss_90'][0] <= h['delta_loss_90'][1]
  assert sum(h['most_important_share'] for h in heads['heads']) == pytest.approx(1.0)
  top = max(heads['heads'], key=lambda h: h['delta_loss'])
  assert top['gap_to_top_90'] == [0.0, 0.0]  # the paired gap of the top head to itself
  for h in heads[
    'heads'
  ]:  # paired gap = top's cost - this head's: its interval holds the point gap
    low, high = h['gap_to_top_90']
    assert low <= high and low <= top['delta_loss'] - h['delta_loss'] + 1e-6
  scores = np.asarray(heads['induction']['scores'])  # [layers, heads], attention shares
  assert scores.shape == (heads['model']['num_layers'], heads['model']['num_heads'])
  assert ((scores >= 0) & (scores <= 1)).all() and heads['induction']['copy_loss_first'] > 0
  pre = json.loads((quick / 'out' / 'pretraining.json').read_text())['results']
  approaches = {r['approach'] for r in pre['table']}
  assert {'fine-tuned', 'scratch'} <= approaches
  assert ('tf-idf' in approaches) or pre['tfidf_note']


def test_parameter_budgets():
  budget = 12 * 4 * 128**2
  assert depth.width_for_budget(budget, 1, 4) == 256
  assert depth.width_for_budget(budget, 4, 4) == 128
  assert depth.width_for_budget(budget, 16, 4) == 64
  assert depth.width_for_budget(budget, 8, 4) % 4 == 0
  assert [ffn_width.layers_for_budget(4, 4, r) for r in (0, 1, 2, 4, 8)] == [12, 8, 6, 4, 2]


class CharTokenizer:
  def decode(self, ids):
    return ''.join(chr(i) for i in ids)


def test_probe_labels_follow_lines():
  windows = np.array([[ord(c) for c in 'ab\ncde\nf']])
  labels = depth.token_labels(windows, CharTokenizer(), top_k=3)
  mask, start = labels['line_start']
  assert start[0].tolist() == [0, 0, 0, 1, 0, 0, 0, 1]
  assert not mask[0, 0] and not mask[0, 2]  # no previous token; a newline itself
  mask, pos = labels['line_pos']
  assert mask[0].tolist() == [False, False, False, True, True, True, False, True]
  assert pos[0, 3:6].tolist() == [0, 1, 2] and pos[0, 7] == 0
  mask, nxt = labels['next_token']
  assert not mask[0, -1]  # the last token has no next token


@pytest.mark.slow  # `quick` runs every experiment (2-4 min): in `pytest -m slow` only
def test_corpus_slice_validation_is_exactly_the_held_out_text(quick):
  from jaxformer.data import build_task_data

  corpus = quick / 'runs' / 'overfitting' / 'corpus'
  path, val_fraction, sizes = overfitting.write_slice(str(corpus), 0.05, 20_000)
  data = build_task_data(
    {'name': 'text_files', 'files': path, 'val_fraction': val_fraction, 'tokenizer': 'byte'},
    task='lm',
    max_len=32,
    batch_size=1,
    seed=0,
  )
  text = open(path, encoding='utf-8').read()
  assert len(data.examples('validation')[0]['text']) == sizes['validation_chars']
  assert data.examples('train')[0]['text'] + data.examples('validation')[0]['text'] == text


@pytest.mark.slow  # `quick` runs every experiment (2-4 min): in `pytest -m slow` only
def test_overfitting_says_how_much_of_the_held_out_text_each_evaluation_scores(quick):
  """The answer names the scored tokens, not the whole held-out slice, when evaluations read a
  prefix of it (eval_steps > 0 at default settings)."""
  payload = json.loads((quick / 'out' / 'overfitting.json').read_text())
  sizes = payload['settings']['sizes']
  assert 0 < sizes['scored_tokens'] <= sizes['validation_tokens']
  assert f'validated on {overfitting._scored(sizes)} tokens' in payload['answer']
  assert overfitting._scored({'scored_tokens': 16384, 'validation_tokens': 57000}) == (
    'the first 16,384 of the 57,000'
  )


def test_seed_spread_is_the_sample_deviation_and_overlapping_ranges_are_not_distinguishable():
  # docs/results.md's genre seeds, rounded there, hence 0.013 here where results.md says 0.014
  fine_tuned = seeds.spread([0.633, 0.607, 0.615])
  assert fine_tuned['std'] == pytest.approx(np.std([0.633, 0.607, 0.615], ddof=1))
  assert seeds.mean_std(fine_tuned) == '0.618 ± 0.013'
  scratch = seeds.spread([0.482, 0.427, 0.442])
  assert seeds.distinguishable(fine_tuned, scratch) and seeds.difference(fine_tuned, scratch) == (
    '+0.168'
  )
  close = seeds.spread([0.600, 0.640, 0.620])  # its range, 0.600-0.640, covers 0.618's
  assert seeds.distinguishable(close, fine_tuned) is False
  assert seeds.difference(close, fine_tuned).endswith(
    'not distinguishable (the mean ± std ranges overlap)'
  )
  one = seeds.spread([0.5])
  assert one['std'] == 0.0 and seeds.mean_std(one) == '0.500 (1 seed)'
  assert seeds.distinguishable(one, fine_tuned) is None
  assert 'one seed' in seeds.difference(one, fine_tuned)


def test_overfitting_answer_gives_each_arm_over_its_seeds_and_says_which_gaps_are_noise():
  def arm(name, kept, stopped_early=False):
    runs = [
      {
        'kept_val_loss': k,
        'best_val_loss': k - 0.1,
        'final_val_loss': k,
        'final_train_loss': 1.0,
        'kept_step': 600 - 100 * stopped_early,
        'best_step': 400 + i,
        'last_step': 500 if stopped_early else 600,
        'stopped_early': stopped_early,
        'whole_split_val_loss': k + 0.0512,
      }
      for i, k in enumerate(kept)
    ]
    return overfitting._arm_row(name, runs)

  rows = [
    arm('none', [3.00, 3.02, 3.04]),
    arm('dropout', [2.80, 2.81, 2.82]),  # clearly better than none
    arm('weight decay', [2.99, 3.01, 3.03]),  # within none's spread
    arm('both + early stopping', [2.79, 2.83, 2.87], stopped_early=True),
  ]
  s = {'fraction': 0.02, 'num_train_steps': 600, 'seeds': [0, 1, 2]}
  sizes = {
    'train_chars': 1000,
    'validation_chars': 500,
    'scored_tokens': 100,
    'validation_tokens': 100,
    'epochs': 20.0,
    'train_tokens': 300,
  }
  answer = overfitting._answer(s, sizes, rows)
  assert '| none | last (600, 600, 600) -> 3.020 ± 0.020 |' in answer
  assert 'dropout -0.210;' in answer
  assert 'weight decay -0.010, not distinguishable' in answer
  assert 'Best weights kept: dropout (2.810 ± 0.010)' in answer
  assert 'both + early stopping, is behind it by +0.020, not distinguishable' in answer
  assert 'Early stopping stopped 3 of 3 runs (at step 500, 500, 500)' in answer
  assert (
    "On all 100 held-out tokens (each run's last evaluation, of the weights kept): none "
    '3.071 ± 0.020; dropout 2.861 ± 0.010, -0.210 against none; weight decay 3.061 ± 0.020, '
    '-0.010, not distinguishable (the mean ± std ranges overlap) against none;'
  ) in answer


def test_ffn_width_trains_every_setting_per_seed_and_seed_0_under_the_label_depth_reuses(
  monkeypatch, tmp_path
):
  from jaxformer.experiments import depth

  trained = []

  def train(config, root, label):
    trained.append((label, config.seed))
    return config

  def describe(config):
    ratio, layers = config.model.mlp_ratio, config.model.num_layers
    bpb = 3.0 - 0.05 * ratio + 0.001 * config.seed  # seeds 0.001 apart: the ratios separate
    return {
      'num_layers': layers,
      'non_embedding_params': layers * (4 + 2 * ratio) * 1000,
      'train_seconds': 10.0 * layers,
      'best_val_bits_per_byte': bpb,
      'whole_split_bits_per_byte': bpb + 0.0312,
      'cached': False,
      'val_steps': [6, 12],
      'val_bits_per_byte': [bpb + 0.1, bpb],
    }

  from jaxformer.experiments import common

  monkeypatch.setattr(common, 'train_cached', train)
  monkeypatch.setattr(common, 'describe_lm_run', describe)
  result = ffn_width.run(Options(quick=True, runs=str(tmp_path)))
  # quick: ratios 0 and 4 at 2 layers, and ratio 0 at the 6 layers that match ratio 4's parameters
  assert trained == [
    ('layers2-ratio0-d32', 0),
    ('layers2-ratio0-d32-seed1', 1),
    ('layers2-ratio4-d32', 0),
    ('layers2-ratio4-d32-seed1', 1),
    ('layers6-ratio0-d32', 0),
    ('layers6-ratio0-d32-seed1', 1),
  ]
  # depth's sweep trains its runs through the same helper, so the two experiments share them
  assert 'small_lm_over_seeds(' in open(depth.__file__).read()
  rows = result.results['runs']
  assert [r['bits_per_byte']['seeds'] for r in rows] == [2, 2, 2]
  assert rows[0]['bits_per_byte']['mean'] == pytest.approx(3.0005)
  assert 'Each step up in mlp_ratio: 0 -> 4 -0.200.' in result.answer
  assert 'mlp_ratio 4 x 2 layers (24k params, 20 s): 2.800 ± 0.001' in result.answer
  # the prefix the curves score, then every run's last evaluation on the whole split
  assert result.answer.endswith(
    "On the whole validation split (each run's last step, mean ± std): mlp_ratio 0 x 2 layers "
    '3.032 ± 0.001; mlp_ratio 4 x 2 layers 2.832 ± 0.001; mlp_ratio 0 x 6 layers 3.032 ± 0.001.'
  )


def test_a_run_cached_before_a_new_config_field_is_reused_while_it_holds_its_old_value(
  monkeypatch, tmp_path
):
  """dataset.shift_windows came after the cached sweeps: at its default (False) a cached run is
  found under the key it was saved with; a run that turns it on is a new run."""
  import copy
  import hashlib

  from jaxformer.experiments import common
  from jaxformer.training import loop

  config = common.small_lm_config(quick=True)
  before = copy.deepcopy(config)
  del before.dataset['shift_windows']  # the config as it was when the run was cached
  old_key = hashlib.sha256(before.to_json(sort_keys=True).encode()).hexdigest()[:10]
  os.makedirs(tmp_path / f'lm-{old_key}')
  (tmp_path / f'lm-{old_key}' / 'summary.json').write_text('{"final": {"loss": 1.5}}')
  trained = []
  monkeypatch.setattr(loop, 'train_and_evaluate', lambda c, workdir: trained.append(workdir))
  run = common.train_cached(config, str(tmp_path), 'lm')
  assert run.cached and run.summary['final']['loss'] == 1.5 and not trained
  config.dataset.shift_windows = True
  assert common.run_key(config) != old_key


def test_depth_sweep_runs_every_depth_per_seed_and_says_which_gaps_are_noise(monkeypatch, tmp_path):
  from jaxformer.experiments import common, depth

  trained, labels = [], []

  def describe(config):
    layers, seed = config.model.num_layers, config.seed
    trained.append((layers, config.model.d_model, seed))
    bpb = {1: 3.1, 2: 3.0, 4: 2.99}[layers] + 0.02 * seed  # 2 vs 4 layers: inside the spread
    return {
      'num_layers': layers,
      'd_model': config.model.d_model,
      'non_embedding_params': 12 * layers * config.model.d_model**2,
      'steps': 12,
      'best_val_bits_per_byte': bpb,
      'whole_split_bits_per_byte': bpb + 0.5,
      'train_seconds': 1.0,
      'cached': False,
    }

  monkeypatch.setattr(
    common, 'train_cached', lambda config, root, label: labels.append(label) or config
  )
  monkeypatch.setattr(common, 'describe_lm_run', describe)
  s = dict(depth._settings(quick=True), depths=[1, 2, 4], seeds=[0, 1, 2])
  sweep = depth._depth_sweep(common.Options(quick=True, runs=str(tmp_path)), s)
  assert [(t[0], t[2]) for t in trained] == [(d, seed) for d in (1, 2, 4) for seed in (0, 1, 2)]
  # the quick budget's own shape (2 layers x d=32) is the run ffn_width's quick sweep trains
  assert labels[3:6] == [
    'layers2-ratio4-d32',
    'layers2-ratio4-d32-seed1',
    'layers2-ratio4-d32-seed2',
  ]
  assert [r['bits_per_byte']['seeds'] for r in sweep] == [3, 3, 3]
  assert sweep[0]['bits_per_byte']['mean'] == pytest.approx(3.12)
  probes = {k: [0.5, 0.6] for k in depth.PROPERTIES}
  answer = depth._answer(
    {
      'model': {'whole_split_bits_per_byte': 1.971},
      'probes': {'trained': probes, 'random_init': probes},
      'chance_balanced': {k: 0.1 for k in depth.PROPERTIES},
      'depth_sweep': sweep,
    }
  )
  assert 'it reached 1.971 bits per byte on the validation split' in answer
  d1, d2, d4 = (
    f'{n} x d={r["d_model"]}' for n, r in zip(('1 layer', '2 layers', '4 layers'), sweep)
  )
  assert f'Best: {d4}; against it: {d1} +0.110; {d2} +0.010, not distinguishable' in answer
  assert answer.endswith(f'{d1} 3.620 ± 0.020; {d2} 3.520 ± 0.020; {d4} 3.510 ± 0.020.')


def test_pretraining_answer_sets_fine_tuning_against_scratch_and_word_counts_over_seeds():
  from jaxformer.experiments import pretraining

  def row(approach, n, values):
    return {'approach': approach, 'per_class': n, **seeds.spread(values)}

  table = [
    row('fine-tuned', 10, [0.58, 0.60, 0.62]),
    row('scratch', 10, [0.34, 0.35, 0.36]),
    row('tf-idf', 10, [0.59, 0.61, 0.63]),  # ranges overlap fine-tuning's
  ]
  answer = pretraining._answer({'sizes': [10], 'seeds': [0, 1, 2]}, table, {'tfidf_note': None})
  assert '| 10 | 0.600 ± 0.020 | 0.350 ± 0.010 | 0.610 ± 0.020 |' in answer
  assert answer.endswith(
    'Fine-tuned minus scratch: 10/class +0.250. Fine-tuned minus TF-IDF: 10/class -0.010, not '
    'distinguishable (the mean ± std ranges overlap).'
  )


def test_ffn_width_answer_calls_a_gap_inside_the_seed_spread_not_distinguishable():
  def row(ratio, layers, values, series='fixed depth'):
    return {
      'series': series,
      'mlp_ratio': ratio,
      'num_layers': layers,
      'non_embedding_params': 1000 * layers * (4 + 2 * ratio),
      'train_seconds': 10.0,
      'bits_per_byte': seeds.spread(values),
    }

  s = {'base_layers': 4, 'base_ratio': 4, 'seeds': [0, 1, 2]}
  rows = [
    row(0, 4, [3.10, 3.11, 3.12]),
    row(4, 4, [2.90, 2.91, 2.92]),
    row(8, 4, [2.905, 2.915, 2.925]),
    row(0, 12, [3.15, 3.16, 3.17], 'fixed params'),
  ]
  answer = ffn_width._answer(s, rows)
  assert '0 -> 4 -0.200;' in answer
  assert '4 -> 8 +0.005, not distinguishable' in answer
  assert 'Removing the FFN entirely, against mlp_ratio 4: bits/byte +0.200, with' in answer
  assert (
    'Best at this budget: mlp_ratio 4 with 4 layers; the next, mlp_ratio 0 with 12 layers, is '
    'behind it by +0.250.'
  ) in answer


def test_number_words_give_their_value_and_digits():
  from num2words import num2words

  rng = np.random.default_rng(0)
  numbers = [0, 5, 15, 40, 105, 1000, 1015, 20_001, 100_000, 999_999, *rng.integers(0, 10**6, 200)]
  values = [number_words.number_value(num2words(int(n), lang='en')) for n in numbers]
  assert values == [int(n) for n in numbers]
  labels = number_words.number_labels([23_405, 999, 7])
  assert labels['units'].tolist() == [5, 9, 7] and labels['tens'].tolist() == [0, 9, 0]
  assert labels['hundreds'].tolist() == [4, 9, 0] and labels['thousands'].tolist() == [1, 0, 0]
  with pytest.raises(ValueError, match="'million'"):
    number_words.number_value('one million')


@pytest.mark.slow  # `quick` runs every experiment (2-4 min): in `pytest -m slow` only
def test_depth_translation_probes_every_layer_of_both_stacks(quick):
  payload = json.loads((quick / 'out' / 'depth_translation.json').read_text())
  r = payload['results']
  layers = {
    'encoder': r['model']['num_encoder_layers'],
    'decoder': r['model']['num_decoder_layers'],
  }
  for label in ('trained', 'random_init'):
    for stack, props in depth_translation.PROPERTIES.items():
      for name in props:
        values = r['probes'][label][stack][name]
        assert len(values) == layers[stack] + 1 and all(0.0 <= v <= 1.0 for v in values)
  # Probes train on validation numbers and test on test numbers; `thousands` adds numbers
  # below 1000 from the train split, the same count to each side.
  settings = payload['settings']
  for stack in ('encoder', 'decoder'):
    assert r['probe_examples'][stack]['units'] == [settings['probe_examples']] * 2
    assert (
      r['probe_examples'][stack]['thousands']
      == [settings['probe_examples'] + settings['small_numbers'] // 2] * 2
    )
    assert r['chance_balanced'][stack]['thousands'] == 0.5
  # Every piece has its own embedding, so the current piece is decodable from layer 0 of any
  # model whose probe labels line up with the positions they were read at.
  for label in ('trained', 'random_init'):
    assert r['probes'][label]['encoder']['token'][0] > 0.9
    assert r['probes'][label]['decoder']['token'][0] > 0.9
  # A language-model run is not a translation model: a clear error, not a crash inside.
  lm = Options(workdir=str(quick / 'runs' / 'lm'), quick=True)
  with pytest.raises(ValueError, match="'lm' run on 'jaxformer_shakespeare'.*needs a translate"):
    depth_translation.translation_run(lm)


def test_unknown_experiment_is_a_clear_error():
  proc = subprocess.run(
    [sys.executable, '-m', 'jaxformer.experiments', 'nope'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 2 and "unknown experiment 'nope'" in proc.stderr


def test_heads_depth_and_pretraining_analyse_the_default_lm(tmp_path, monkeypatch):
  """Which LM the experiments train when no --workdir is given (training itself is stubbed): the
  default LM, the tiny one with --quick, and never the old small LM (d_model 128)."""
  import types

  from jaxformer.experiments import common, depth, heads, heads_dynamics, pretraining

  trained = []
  monkeypatch.setattr(
    'jaxformer.training.loop.train_and_evaluate', lambda c, w: trained.append((c, w))
  )
  monkeypatch.setattr(
    'jaxformer.checkpoint.load_pretrained', lambda w: types.SimpleNamespace(task='lm', path=w)
  )
  default = common.load_config('shakespeare_lm')
  opts = common.Options(runs=str(tmp_path))
  assert opts.lm_workdir() == str(tmp_path / 'shakespeare_lm')
  assert common.pretrained_lm(opts).path == str(tmp_path / 'shakespeare_lm')
  shipped = trained[-1][0]  # configs/shakespeare_lm.py as shipped, plus kept checkpoints
  assert (shipped.model.d_model, shipped.num_train_steps) == (
    default.model.d_model,
    default.num_train_steps,
  )
  quick = common.Options(runs=str(tmp_path), quick=True)
  assert common.pretrained_lm(quick).path == str(tmp_path / 'lm')
  assert trained[-1][0].model.d_model == common.load_config('tiny').model.d_model
  mine = common.Options(workdir=str(tmp_path / 'mine'))
  assert common.pretrained_lm(mine).path == str(tmp_path / 'mine')
  for module in (heads, heads_dynamics, depth, pretraining):  # each asks for the same LM
    assert 'pretrained_lm(opts)' in open(module.__file__).read()


def test_the_written_command_names_the_analysed_run(tmp_path):
  """NAME.json and NAME.md say which --workdir was analysed, so the command reruns the numbers."""
  import types

  from jaxformer import plotting
  from jaxformer.experiments import common

  def run(opts):
    return common.Result(settings={}, results={}, answer='a', figures={'': plotting.figure()})

  module = types.SimpleNamespace(QUESTION='q?', run=run)
  opts = common.Options(workdir='runs/mine', out=str(tmp_path))
  payload = common.run_experiment('probe', module, opts)
  assert payload['command'] == 'python -m jaxformer.experiments probe --workdir runs/mine'
  assert (
    '`python -m jaxformer.experiments probe --workdir runs/mine`'
    in (tmp_path / 'probe.md').read_text()
  )


def test_heads_dynamics_says_when_the_cached_default_lm_kept_a_coarser_history(tmp_path):
  from jaxformer.experiments import heads_dynamics

  def hint(every):
    (tmp_path / 'config.json').write_text(json.dumps({'keep_every_steps': every}))
    return heads_dynamics.coarse_history_hint(str(tmp_path))

  assert hint(100) is None  # what default_lm_config keeps now
  assert 'kept a checkpoint every 400 steps, the default LM now every 100' in hint(400)


def test_heads_dynamics_needs_a_history_of_checkpoints(tmp_path):
  from test_checkpoint import saved

  from jaxformer.experiments import heads_dynamics

  def run_with(keep_every_steps, steps):
    (tmp_path / 'config.json').write_text(json.dumps({'keep_every_steps': keep_every_steps}))
    saved(tmp_path / 'checkpoints', [(s, 1.0 / s) for s in steps], keep_last=9).close()

  run_with(0, [1, 2, 3])  # the newest and best checkpoints are not a history
  with pytest.raises(ValueError, match='keep_every_steps'):
    heads_dynamics.kept_steps(str(tmp_path))
  run_with(2, [4, 5])  # the multiples of 2, and the last step
  assert heads_dynamics.kept_steps(str(tmp_path)) == [2, 4, 5]


@pytest.mark.slow  # `quick` runs every experiment (2-4 min): in `pytest -m slow` only
def test_heads_dynamics_follows_every_kept_step(quick):
  r = json.loads((quick / 'out' / 'heads_dynamics.json').read_text())['results']
  # Step 0 (untrained weights), then the quick LM's checkpoint every 10 steps.
  assert r['steps'] == [0, 10, 20, 30]
  layers, heads = r['model']['num_layers'], r['model']['num_heads']
  for row in r['per_step']:
    for key in ('entropy', 'previous_token', 'delta_loss', 'induction'):
      assert np.asarray(row[key]).shape == (layers, heads), key
  # Untrained heads attend uniformly: their entropy is that of uniform causal attention.
  np.testing.assert_allclose(r['per_step'][0]['entropy'], r['uniform_entropy'], rtol=0.02)


def test_the_swept_lm_stays_the_one_the_page_measured():
  """small_lm_config starts from configs/shakespeare_lm.py; when the default LM changed (no
  dropout, cosine to zero), the model docs/experiments.md's sweeps measured must not."""
  from jaxformer.experiments import common

  swept = common.small_lm_config(quick=False)
  assert (swept.model.dropout_rate, swept.min_lr_ratio) == (0.0, 0.1)
  assert (swept.model.d_model, swept.batch_size, swept.num_train_steps) == (96, 16, 250)
