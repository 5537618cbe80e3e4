"""What every experiment shares: options, cached training runs, the LM to analyse, outputs.

An experiment module defines QUESTION and `run(opts) -> Result`; `run_experiment` times it and
writes three files to opts.out:
    NAME.png    the figure (plus NAME_*.png for extra figures)
    NAME.json   settings, raw numbers, the measured answer, the machine and the wall time
    NAME.md     the answer as a markdown snippet, generated from the same numbers as the JSON
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import json
import math
import os
import platform
import time
from typing import Any

import numpy as np

from jaxformer.experiments import seeds


@dataclasses.dataclass
class Options:
  quick: bool = False  # tiny sizes: the same code in well under a minute
  workdir: str | None = None  # the run to analyse: an LM (heads*, depth), or a translate run
  runs: str | None = None  # where this experiment caches the models it trains
  out: str = 'docs/experiments'

  def runs_dir(self, name: str) -> str:
    root = self.runs or os.path.join('runs', 'experiments-quick' if self.quick else 'experiments')
    return os.path.join(root, name)

  def lm_workdir(self) -> str:
    """--workdir, else the cached default LM (with --quick: the tiny LM; see pretrained_lm)."""
    if self.workdir:
      return self.workdir
    return self.runs_dir('lm' if self.quick else 'shakespeare_lm')


@dataclasses.dataclass
class Result:
  settings: dict  # what was run (sizes, steps, seeds...)
  results: dict  # the raw numbers
  answer: str  # the measured answer, markdown, numbers formatted from `results`
  figures: dict  # suffix -> matplotlib figure; '' is the main NAME.png


# ----------------------------------------------------------------------------- configs and training


def load_config(name: str):
  """The get_config() of a shipped config, jaxformer.configs.NAME (configs/NAME.py)."""
  return importlib.import_module(f'jaxformer.configs.{name}').get_config()


def quiet(config):
  """A config for a run inside an experiment: one device, no progress bar, a short sample."""
  config.mesh_shape = (1, 1)
  config.progress = False
  config.sample_tokens = 8
  return config


@dataclasses.dataclass
class Run:
  workdir: str
  summary: dict
  metrics: list  # metrics.jsonl rows: {'step', 'split': 'train'|'val', 'loss', ...}
  cached: bool

  def curve(self, split: str, key: str = 'loss') -> tuple[list, list]:
    rows = [
      r for r in self.metrics if r.get('split') == split and isinstance(r.get(key), (int, float))
    ]
    return [r['step'] for r in rows], [float(r[key]) for r in rows]


# Config fields added after runs were cached, with the value those runs had: left out of the run
# key while they hold it, so a new option does not orphan every cached run that predates it.
KEY_NEUTRAL = {('dataset', 'shift_windows'): False}


def run_key(config) -> str:
  """The hash that names a config's cached run (see KEY_NEUTRAL)."""
  config = copy.deepcopy(config)
  for (section, field), value in KEY_NEUTRAL.items():
    if field in config[section] and config[section][field] == value:
      del config[section][field]
  return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:10]


def train_cached(config, root: str, label: str) -> Run:
  """train_and_evaluate(config) into ROOT/LABEL-<run_key(config)>, or reuse that run if it
  finished. The key makes a changed config a new run, so a cached result matches its settings.
  """
  from jaxformer.training.loop import train_and_evaluate
  from jaxformer.training.writers import read_metrics

  workdir = os.path.join(root, f'{label}-{run_key(config)}')
  summary_path = os.path.join(workdir, 'summary.json')
  cached = os.path.exists(summary_path)
  if not cached:
    print(f'[experiments] training {workdir}', flush=True)
    train_and_evaluate(config, workdir)  # resumes by itself if an earlier attempt was killed
  with open(summary_path) as f:
    summary = json.load(f)
  return Run(workdir, summary, read_metrics(workdir), cached)


def whole_split(summary: dict, key: str = 'bits_per_byte') -> float | None:
  """A metric of a run's last evaluation (summary.json's 'final'): every validation token, not the
  prefix its curve scores. None for a run that predates it or whose final split is another."""
  final = summary.get('final') or {}
  return final.get(key) if final.get('split') == 'validation' else None


def describe_lm_run(run: Run) -> dict:
  """A language-model run's size (library formulas), validation bits per byte and timing."""
  from jaxformer.config import ModelConfig
  from jaxformer.models import flops_per_token, param_count_formula

  with open(os.path.join(run.workdir, 'config.json')) as f:
    resolved = json.load(f)
  cfg = ModelConfig.from_dict(resolved['model'])
  embeddings = cfg.padded_vocab_size * cfg.d_model + (
    cfg.max_len * cfg.d_model if cfg.position == 'learned' else 0
  )
  steps, bpb = run.curve('val', 'bits_per_byte')
  summary = run.summary
  tokens_per_step = resolved['batch_size'] * cfg.max_len
  return {
    'num_layers': cfg.num_layers,
    'd_model': cfg.d_model,
    'mlp_ratio': cfg.mlp_ratio,
    'non_embedding_params': param_count_formula(cfg) - embeddings,
    'train_flops_per_token': flops_per_token(cfg, cfg.max_len),
    'best_val_bits_per_byte': min(bpb),
    'final_val_bits_per_byte': bpb[-1],
    'whole_split_bits_per_byte': whole_split(summary),
    'best_val_loss': summary['best_val_loss'],
    'val_steps': steps,
    'val_bits_per_byte': bpb,
    'steps': summary['last_step'],
    'tokens_per_s': summary['tokens_per_s'],
    # pure training time: steps at the median measured throughput (no compile, no evaluation)
    'train_seconds': summary['last_step'] * tokens_per_step / summary['tokens_per_s'],
    'run_wall_s': summary['wall_s'],
    'cached': run.cached,
  }


def small_lm_config(quick: bool):
  """The small from-scratch LM that the sweeps (ffn_width, depth, overfitting) vary.

  Sized for a shared 2-core CPU, where a sweep runs up to nine of them: d_model 96, 4 layers,
  4 heads, 64-token windows, a 1024-token BPE vocabulary (so the output softmax does not
  dominate), 250 steps of 16 windows. No dropout by default: 250 steps see about a fifth of an
  epoch, where there is nothing to regularise yet.
  """
  if quick:
    config = load_config('tiny')
    config.num_train_steps = 12
    config.eval_every_steps = 6
    config.checkpoint_every_steps = 6
    config.log_every_steps = 3
    config.model.num_heads = 4
    config.model.d_model = 32
    config.model.max_len = 32
    config.sample_tokens = 0  # no one reads the sample; compiling its decoder costs ~15%
  else:
    config = load_config('shakespeare_lm')
    config.dataset.vocab_size = 1024
    config.model.d_model = 96
    config.model.num_heads = 4
    config.model.num_layers = 4
    config.model.max_len = 64
    config.batch_size = 16
    config.num_train_steps = 250
    config.learning_rate = 2e-3
    config.warmup_steps = 25
    config.eval_every_steps = 50
    config.checkpoint_every_steps = 50
    config.log_every_steps = 25
    config.eval_steps = 16  # 16 x 16 windows of the held-out plays per evaluation
    config.model.position = (
      'learned'  # as measured in docs/experiments.md (the default LM now uses rope)
    )
    config.model.activation, config.model.d_ff = 'gelu', 0  # likewise (the default: SwiGLU)
    config.model.scan_layers = True
  config.model.dropout_rate = 0.0
  # The schedule docs/experiments.md measured, pinned: the default LM's (which this config
  # starts from) later changed to decay to zero.
  config.min_lr_ratio = 0.1
  config.early_stopping.patience = 0
  return quiet(config)


def small_lm_over_seeds(opts: Options, seed_list, layers: int, ratio: float, d_model: int) -> dict:
  """One shape of the small LM (small_lm_config with these layers, mlp_ratio and d_model), trained
  once per seed (cached): seed 0's run in full (describe_lm_run: its curve and timing), with the
  spread over all seeds of the best bits/byte on the evaluation prefix and of the whole-split
  bits/byte (seeds.spread). ffn_width and depth label runs alike, so they share the runs they
  both train; seed 0 keeps the label those runs had before seeds were added."""
  per_seed = []
  for seed in seed_list:
    config = small_lm_config(opts.quick)
    config.model.num_layers = layers
    config.model.mlp_ratio = float(ratio)
    config.model.d_model = d_model
    config.seed = seed
    label = f'layers{layers}-ratio{ratio:g}-d{d_model}' + (f'-seed{seed}' if seed else '')
    per_seed.append(describe_lm_run(train_cached(config, opts.runs_dir('small_lm'), label)))
  kept = ('best_val_bits_per_byte', 'whole_split_bits_per_byte', 'train_seconds', 'cached')
  return {
    **per_seed[0],
    'bits_per_byte': seeds.spread([r['best_val_bits_per_byte'] for r in per_seed]),
    'whole_split': seeds.spread_if_complete(r['whole_split_bits_per_byte'] for r in per_seed),
    'seed_runs': [
      {'seed': seed, **{k: r[k] for k in kept}} for seed, r in zip(seed_list, per_seed)
    ],
  }


def quick_lm_config():
  """The tiny LM that heads, heads_dynamics, depth and pretraining analyse with --quick."""
  config = load_config('tiny')
  config.num_train_steps = 30
  # A history for heads_dynamics at 10, 20, 30, off the evaluation and checkpoint grid: the
  # quick test then also checks that kept steps are saved whatever the other intervals are.
  config.eval_every_steps, config.checkpoint_every_steps, config.keep_every_steps = 15, 1000, 10
  config.model.num_heads = 4
  config.model.mlp_ratio = 2.0
  config = quiet(config)
  config.sample_tokens = 0  # as in small_lm_config: no one reads the sample
  return config


def default_lm_config():
  """configs/shakespeare_lm.py (one device, quiet): the model `python train.py` trains, with a
  checkpoint kept every 100 steps for heads_dynamics (the weights and metrics are unchanged). Of
  its 2,535 steps that keeps 25 points besides the last: fine enough to see when heads split,
  which happens within the first few hundred steps."""
  config = quiet(load_config('shakespeare_lm'))
  config.keep_every_steps = 100  # any interval works: a kept step is always saved
  return config


def pretrained_lm(opts: Options):
  """The trained language model at opts.lm_workdir(), trained there first if it holds no
  finished run: the default LM (default_lm_config), or with --quick the tiny quick_lm_config.

  heads, heads_dynamics, depth and pretraining all analyse the default LM: a model too weak to
  need attention cannot show what heads or layers do (docs/experiments.md's weak-model note).
  """
  from jaxformer.checkpoint import load_pretrained

  workdir = opts.lm_workdir()
  if not os.path.exists(os.path.join(workdir, 'summary.json')):
    if os.path.exists(os.path.join(workdir, 'config.json')) and opts.workdir:
      raise ValueError(
        f'{workdir} holds an unfinished run (no summary.json): let it finish, or pass '
        'another --workdir'
      )
    print(
      f'[experiments] {workdir} holds no finished run: training the language model there',
      flush=True,
    )
    from jaxformer.training.loop import train_and_evaluate

    config = quick_lm_config() if opts.quick else default_lm_config()
    train_and_evaluate(config, workdir)
  pre = load_pretrained(workdir)
  if pre.task != 'lm':
    raise ValueError(f'{workdir} is a {pre.task!r} run; pass --workdir of a language-model run')
  return pre


def lm_data(pre, batch_size: int):
  """The LM's own data pipeline (its dataset, tokenizer and window length)."""
  from jaxformer.data import build_task_data, load_tokenizer

  tokenizer = load_tokenizer(pre.tokenizer_dir)
  return build_task_data(
    pre.config['dataset'],
    task='lm',
    max_len=pre.model_config.max_len,
    batch_size=batch_size,
    seed=0,
    tokenizer=tokenizer,
  )


def eval_batches(data, split: str, max_batches: int) -> list[dict]:
  """The first max_batches batches of a split, as numpy dicts."""
  out = []
  for i, batch in enumerate(data.eval_batches(split)):
    if i >= max_batches:
      break
    out.append(batch)
  return out


# ----------------------------------------------------------------------------- reporting


def machine_info() -> dict:
  import jax

  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    model = names[0] if names else model
  except OSError:
    pass
  return {
    'cpu': model,
    'logical_cpus': os.cpu_count(),
    'usable_cpus': len(os.sched_getaffinity(0))
    if hasattr(os, 'sched_getaffinity')
    else os.cpu_count(),
    'load_average_at_start': [round(x, 2) for x in os.getloadavg()]
    if hasattr(os, 'getloadavg')
    else None,
    'platform': platform.platform(),
    'python': platform.python_version(),
    'jax': jax.__version__,
    'backend': jax.default_backend(),
    'devices': jax.device_count(),
  }


def _plain(value: Any) -> Any:
  """JSON-able copy: numpy scalars/arrays -> python numbers/lists, NaN/inf -> None."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return _plain(value.tolist())
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if math.isfinite(value) else None
  return value


def run_experiment(name: str, module, opts: Options) -> dict:
  """Runs one experiment module and writes NAME.png / NAME.json / NAME.md into opts.out."""
  started = time.time()
  machine = machine_info()
  result: Result = module.run(opts)
  wall = round(time.time() - started, 1)
  os.makedirs(opts.out, exist_ok=True)
  from jaxformer.plotting import save_figure

  figures = []
  for suffix, fig in result.figures.items():
    filename = f'{name}{"_" + suffix if suffix else ""}.png'
    save_figure(fig, os.path.join(opts.out, filename))
    figures.append(filename)
  command = f'python -m jaxformer.experiments {name}' + (' --quick' if opts.quick else '')
  command += f' --workdir {opts.workdir}' if opts.workdir else ''  # what was analysed
  payload = _plain(
    {
      'experiment': name,
      'question': module.QUESTION,
      'quick': opts.quick,
      'command': command,
      'settings': result.settings,
      'results': result.results,
      'answer': result.answer,
      'figures': figures,
      'machine': machine,
      'wall_s': wall,
    }
  )
  with open(os.path.join(opts.out, f'{name}.json'), 'w') as f:
    json.dump(payload, f, indent=1, sort_keys=False)
    f.write('\n')
  mode = '--quick (tiny sizes; not the documented settings)' if opts.quick else 'default settings'
  snippet = (
    f'### {module.QUESTION}\n\n![{name}]({figures[0]})\n\n{result.answer}\n\n'
    f'_`{command}`, {mode}: {wall:.0f} s on {machine["cpu"]} '
    f'({machine["usable_cpus"]} CPUs, load average {machine["load_average_at_start"]} at start)._\n'
  )
  with open(os.path.join(opts.out, f'{name}.md'), 'w') as f:
    f.write(snippet)
  print(
    f'[experiments] {name}: wrote {", ".join(figures)}, {name}.json, {name}.md to {opts.out} in '
    f'{wall:.0f} s',
    flush=True,
  )
  return payload


def numpy_init(model, *inputs, seed: int = 0):
  """Parameters for `model` drawn with numpy (N(0, 0.02), LayerNorm scales 1, biases 0).

  Shapes come from jax.eval_shape, so nothing is compiled: XLA compiles random-number code
  slowly on CPU, and timing or analysis of an untrained model does not need flax's initializers.
  """
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), *inputs)['params'])
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = str(getattr(path[-1], 'key', path[-1]))
    if name == 'scale':
      return jnp.ones(leaf.shape, leaf.dtype)
    if name == 'bias':
      return jnp.zeros(leaf.shape, leaf.dtype)
    return jnp.asarray(rng.normal(0.0, 0.02, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def pct(new: float, old: float) -> str:
  """'+12.3%' (relative change from old to new)."""
  return f'{100.0 * (new / old - 1.0):+.1f}%'
