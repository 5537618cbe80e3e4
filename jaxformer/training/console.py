"""What a training run tells its user: the start-up summary, each evaluation, the final metric.

The start-up block says what is about to run (task, model and its size, devices and mesh, dtypes,
attention kernel, the work planned, the workdir) before anything is compiled. It is also appended
to <workdir>/startup.txt, so a resumed run keeps the record of every start.
"""

from __future__ import annotations

import os
import sys
import time

import jax

from jaxformer.checkpoint.vocab import vocab_axis
from jaxformer.model.attention import select_kernel
from jaxformer.training import budget

STARTUP_FILE = 'startup.txt'

_KERNEL_NAMES = {
  'einsum': 'einsum',
  'causal_blocks': 'causal blocks (einsum over query blocks)',
}


def count_parameters(params) -> tuple[int, int]:
  """(all, non-embedding) parameter counts; non-embedding leaves out token and position tables."""
  total = embedding = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    total += leaf.size
    if any(getattr(key, 'key', None) == 'embedding' for key in path):
      embedding += leaf.size
  return total, total - embedding


def padded_vocab_parameters(params, cfg) -> int:
  """Entries of the vocabulary tables past cfg.vocab_size: zeros that never train."""
  extra = cfg.padded_vocab_size - cfg.vocab_size
  count = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    axis = vocab_axis(tuple(str(getattr(key, 'key', key)) for key in path))
    if axis is not None:
      count += leaf.size // leaf.shape[axis] * extra
  return count


def model_line(model, params, cfg) -> str:
  """'DecoderLM, N parameters (M non-embedding)', plus the vocabulary padding when there is any."""
  total, non_embedding = count_parameters(params)
  line = f'{type(model).__name__}, {total:,} parameters ({non_embedding:,} non-embedding)'
  padded = padded_vocab_parameters(params, cfg)
  if padded:
    line += (
      f'; {total - padded:,} real + {padded:,} padding (vocabulary {cfg.vocab_size} '
      f'padded to {cfg.padded_vocab_size})'
    )
  return line


def attention_kernel(cfg, task: str) -> str:
  """The kernel the training step's self-attention runs (the model picks it the same way)."""
  impl = cfg.attention_impl

  def name(causal: bool) -> str:
    kernel = select_kernel(
      impl, causal_self=causal, q_len=cfg.max_len, needs_dropout=cfg.attention_dropout_rate > 0
    )
    if kernel != 'fused':
      return _KERNEL_NAMES[kernel]
    if impl != 'auto':
      return f'dot_product_attention, {impl} kernel'
    if jax.default_backend() == 'gpu' and cfg.compute_dtype != jax.numpy.float32:
      return 'dot_product_attention, cuDNN kernel where it applies, else XLA'
    return 'dot_product_attention, XLA kernel'

  if task == 'translate':
    return f'encoder {name(False)}, decoder {name(True)}; attention_impl={impl}'
  return f'{name(True)}; attention_impl={impl}'  # DecoderLM and Classifier: causal backbones


def planned_evaluations(config, total_steps: int | None) -> str:
  every, batches = int(config.eval_every_steps), int(config.eval_steps)
  split = config.dataset.eval_split
  where = f'{batches} batches of {split!r}' if batches else f'the whole {split!r} split'
  count = '' if total_steps is None else f'{-(-total_steps // every)} evaluations, '
  patience = int(config.early_stopping.patience)
  stop = f'stop after {patience} without improvement' if patience else 'no early stopping'
  return f'{count}every {every} steps and at the end, on {where}; {stop}'


def startup_block(
  s, *, tokens_per_step: int, resume_step: int | None, total_steps: int | None, steps_note: str = ''
) -> str:
  """The start-up summary of the run set up in `s` (training.prepare's result), as printed.

  total_steps is None while a time budget has not decided the step count yet (steps_note says when
  it will be decided).
  """
  config, cfg = s.config, s.model_cfg
  devices = jax.devices()
  steps = f'{total_steps:,} steps' if total_steps is not None else steps_note
  if total_steps is not None:
    steps += f' = {total_steps * tokens_per_step:,} tokens'
  resume = f'resumes from step {resume_step}' if resume_step is not None else 'new run'
  lines = [
    ('task', f'{config.task} on {config.dataset.name}'),
    ('model', model_line(s.model, s.abstract_state['params'], cfg)),
    ('devices', f'{len(devices)} x {devices[0].platform} ({jax.process_count()} process(es))'),
    ('sharding', s.runtime.describe()),
    ('dtype', f'compute {jax.numpy.dtype(cfg.compute_dtype).name}, parameters {cfg.param_dtype}'),
    ('attention', attention_kernel(cfg, config.task)),
    ('work', f'{tokens_per_step:,} tokens per step; {steps}'),
    ('evaluation', planned_evaluations(config, total_steps)),
    ('workdir', f'{os.path.abspath(s.workdir)} ({resume})'),
  ]
  return '\n'.join(f'{key:<11}{value}' for key, value in lines)


def show_startup(s, *, tokens_per_step: int, start: int) -> str:
  """Prints the start-up block (process 0) and appends it to <workdir>/startup.txt."""
  config = s.config
  pending = budget.enabled(config) and budget.RECORD_KEY not in s.resolved
  note = (
    f'steps decided at step {budget.decision_step(config, start)} from the measured speed, '
    f'to train for {config.train_minutes:g} min'
  )
  block = startup_block(
    s,
    tokens_per_step=tokens_per_step,
    resume_step=start or None,
    total_steps=None if pending else int(config.num_train_steps),
    steps_note=note if pending else '',
  )
  if jax.process_index() == 0:
    print(block, flush=True)
    write_startup(s.workdir, block)
  return block


def write_startup(workdir: str, block: str) -> None:
  """Appends the block, with the time it was printed, to <workdir>/startup.txt."""
  with open(os.path.join(workdir, STARTUP_FILE), 'a') as f:
    f.write(f'# {time.strftime("%Y-%m-%d %H:%M:%S %Z")}\n{block}\n\n')


def eval_line(step: int, total: int, metrics: dict, *, task: str, early, monitor: str) -> str:
  """One line per evaluation: validation loss, bits/byte or accuracy, best so far, patience left."""
  score = (
    f'bits/byte {metrics["bits_per_byte"]:.4f}'
    if task == 'lm'
    else f'accuracy {metrics["accuracy"]:.4f}'
  )
  best = f'best {monitor} {early.best_value:.4f} at step {early.best_step}'
  patience = (
    f'patience {early.patience - early.bad_evals}/{early.patience} left'
    if early.patience
    else 'no early stopping'
  )
  return f'eval step {step}/{total}  val loss {metrics["loss"]:.4f}  {score}  {best}  {patience}'


def final_line(final: dict, task: str) -> str:
  """The figure the README quotes: bits/byte (LM) or accuracy, over the whole named split."""
  score = (
    f'bits/byte {final["bits_per_byte"]:.4f}'
    if task == 'lm'
    else f'accuracy {final["accuracy"]:.4f}'
  )
  took = f' ({final["eval_s"]:.0f} s)' if 'eval_s' in final else ''
  return (
    f'final: {score} (loss {final["loss"]:.4f}) on the whole {final["split"]!r} split{took}, '
    f'weights of step {final["step"]}'
  )


class Progress:
  """tqdm bar on a terminal; one plain line per log interval otherwise (logs stay readable)."""

  def __init__(self, config, start: int, total: int):
    self.total, self.t0, self.start = total, time.time(), start
    self.enabled = bool(config.progress) and jax.process_index() == 0
    self.bar = None
    if self.enabled and sys.stderr.isatty():
      from tqdm import tqdm

      self.bar = tqdm(total=total, initial=start, unit='step', dynamic_ncols=True)

  def update(self, step: int, row: dict):
    if not self.enabled:
      return
    if self.bar is not None:
      self.bar.update(step - self.bar.n)
      self.bar.set_postfix(loss=f'{row["loss"]:.3f}', tok_s=f'{row["tokens_per_s"]:.0f}')
      return
    rate = (step - self.start) / max(time.time() - self.t0, 1e-9)
    eta = (self.total - step) / rate if rate else float('nan')
    print(
      f'step {step}/{self.total}  loss {row["loss"]:.4f}  {row["tokens_per_s"]:.0f} tok/s  '
      f'eta {eta:.0f}s',
      file=sys.stderr,
      flush=True,
    )

  def close(self):
    if self.bar is not None:
      self.bar.close()
