"""Export a trained model to one self-contained directory, and load it back with one call.

An export holds what inference or fine-tuning needs and nothing of the training state:

    <out>/jaxformer_pretrained.json   format, step, val_loss, task, num_classes, model config,
                                      the run's resolved config, sha256 of every parameter
    <out>/params/                     the best checkpoint's params (orbax; no pickles anywhere)
    <out>/tokenizer/                  copy of the run's tokenizer directory (if it had one)

The run workdir it is made from looks like <workdir>/config.json (resolved run config),
<workdir>/tokenizer/ and <workdir>/checkpoints/ (a Checkpointer directory). load_pretrained also
accepts such a workdir directly and then reads its best checkpoint.
"""

import dataclasses
import datetime
import json
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxformer import sharding as jf_sharding
from jaxformer.checkpoint import integrity
from jaxformer.checkpoint.abstract import nested_target
from jaxformer.checkpoint.errors import CheckpointError
from jaxformer.checkpoint.manager import Checkpointer
from jaxformer.checkpoint.processes import everywhere, jaxformer_version, short_error, sync
from jaxformer.config import TASKS, early_stopping_monitor, recorded_config_problem

EXPORT_FILE = 'jaxformer_pretrained.json'
EXPORT_FORMAT = 'jaxformer-pretrained'
EXPORT_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A loaded model: build it with model_config (+ task, num_classes) and apply it to params."""

  config: dict  # the training run's resolved config
  model_config: Any  # jaxformer.config.ModelConfig
  params: Any  # nested dict of jax arrays
  tokenizer_dir: str | None  # load with jaxformer.data.load_tokenizer(tokenizer_dir)
  task: str  # 'lm' | 'translate' | 'classify'
  num_classes: int | None  # classify only
  step: int | None = None  # training step the params come from
  val_loss: float | None = None


def _model_config(model: dict, where):
  from jaxformer.config import ModelConfig  # imported late: written alongside this package

  try:
    return ModelConfig.from_dict(model)
  except (TypeError, ValueError, AttributeError) as e:
    raise CheckpointError(f'{where} has an invalid model config ({e})') from e


def _read_text(path: epath.Path) -> str:
  """A file of a run or export; a FIFO or device there is refused, never opened (it may block)."""
  if path.exists() and not os.path.isfile(path):
    raise CheckpointError(f'{path} is not a regular file; refused')
  return path.read_text()


def _refuse_escape(root: epath.Path, path: epath.Path) -> None:
  """An export is read only inside itself: a link from it to elsewhere is refused."""
  real_root, real = os.path.realpath(root), os.path.realpath(path)
  if os.path.commonpath([real_root, real]) != real_root:
    raise CheckpointError(f'{path} points outside the export ({real}); refused')


def _read_run_config(workdir: epath.Path) -> dict:
  path = workdir / 'config.json'
  try:
    config = json.loads(_read_text(path))
  except FileNotFoundError as e:
    raise CheckpointError(
      f'{workdir} has no config.json; pass the workdir of a jaxformer training run'
    ) from e
  except ValueError as e:
    raise CheckpointError(
      f'{path} is not valid JSON ({e}); restore it from a backup or re-run training'
    ) from e
  if not isinstance(config, dict) or 'model' not in config or 'task' not in config:
    raise CheckpointError(f"{path} lacks 'model' or 'task'; it is not a jaxformer run config")
  _check_recorded_config(config, path)
  return config


def _check_recorded_config(config, where) -> None:
  problem = recorded_config_problem(config)
  if problem:
    raise CheckpointError(f'{where} holds a malformed run config: {problem}; restore it')


def _num_classes(config: dict) -> int | None:
  value = config.get('num_classes')
  return int(value) if value else None


def _best_params(workdir: epath.Path):
  """(step, val_loss, params) of the run's best good checkpoint, read without touching the run."""
  checkpointer = Checkpointer(workdir / 'checkpoints', read_only=True, async_save=False)
  try:
    if not checkpointer.all_steps():
      raise CheckpointError(
        f'{workdir / "checkpoints"} holds no checkpoints; train the model first'
      )
    step, params = checkpointer.restore_params()
    return step, checkpointer.val_loss(step), params
  finally:
    checkpointer.close()


def export_pretrained(workdir, out_dir) -> str:
  """Writes the best params, model config, task and tokenizer of `workdir` to `out_dir`.

  The directory appears only when complete (written under a temporary name, then renamed).
  Refuses to overwrite an existing out_dir. Returns the absolute path of out_dir.
  """
  workdir, out = epath.Path(workdir).absolute(), epath.Path(out_dir).absolute()
  if out.exists():
    raise CheckpointError(f'{out} already exists; choose a new --out directory or delete it first')
  config = _read_run_config(workdir)
  model_config = _model_config(config['model'], workdir / 'config.json')
  step, val_loss, params = _best_params(workdir)
  tokenizer = workdir / 'tokenizer'
  return write_export(
    out,
    params,
    config=config,
    model_config=model_config,
    step=step,
    val_loss=val_loss,
    source=str(workdir),
    tokenizer_dir=str(tokenizer) if tokenizer.is_dir() else None,
  )


def write_export(
  out_dir, params, *, config, model_config, step, val_loss, source, tokenizer_dir
) -> str:
  """Writes an export of `params` to `out_dir` (which must not exist), all or nothing.

  config: the resolved run config (or what stands in for one: at least 'task' and 'model');
  source: where the params come from (a run workdir, a Hugging Face directory);
  tokenizer_dir: a saved jaxformer tokenizer directory to copy, or None.
  """
  out = epath.Path(out_dir).absolute()
  if out.exists():
    raise CheckpointError(f'{out} already exists; choose a new --out directory or delete it first')
  tmp = out.parent / f'.{out.name}.export-tmp'
  if jax.process_index() == 0:
    if tmp.exists():
      tmp.rmtree()  # left by an export that was killed
    out.parent.mkdir(parents=True, exist_ok=True)
  sync('jaxformer_export_start')
  with ocp.StandardCheckpointer() as writer:  # collective: every process takes part
    writer.save(tmp / 'params', params)
    writer.wait_until_finished()
  arrays = integrity.describe({'params': params})  # collective for arrays spanning processes
  failure = None
  if jax.process_index() == 0:
    try:
      manifest = {
        'format': EXPORT_FORMAT,
        'format_version': EXPORT_FORMAT_VERSION,
        'jaxformer_version': jaxformer_version(),
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'source_workdir': source,
        'step': step,
        'val_loss': val_loss,  # the monitored value: an error rate when monitor is 'error'
        'monitor': early_stopping_monitor(config),
        'task': config['task'],
        'num_classes': _num_classes(config),
        'model': model_config.to_dict(),
        'config': config,
        'arrays': arrays,
      }
      (tmp / EXPORT_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
      if tokenizer_dir is not None:
        shutil.copytree(tokenizer_dir, str(tmp / 'tokenizer'))
      tmp.rename(out)  # atomic: out_dir is either absent or complete
    except (OSError, TypeError, ValueError) as e:
      failure = e
      if tmp.exists():
        tmp.rmtree()
  if not everywhere(failure is None):  # also the barrier: out_dir exists everywhere
    raise CheckpointError(
      f'could not write export {out} ({short_error(failure) if failure else "failed on process 0"})'
    )
  return str(out)


def _load_export(root: epath.Path) -> Pretrained:
  try:
    manifest = json.loads(_read_text(root / EXPORT_FILE))
  except ValueError as e:
    raise CheckpointError(
      f'{root / EXPORT_FILE} is not valid JSON ({e}); re-export the model'
    ) from e
  if not isinstance(manifest, dict) or manifest.get('format') != EXPORT_FORMAT:
    raise CheckpointError(
      f'{root / EXPORT_FILE} is not a jaxformer export manifest; re-export the model'
    )
  if manifest.get('format_version', 0) > EXPORT_FORMAT_VERSION:
    raise CheckpointError(
      f'{root} was exported by a newer jaxformer ({manifest.get("jaxformer_version")}); '
      'upgrade jaxformer'
    )
  for name in ('params', 'tokenizer'):
    _refuse_escape(root, root / name)
  _check_recorded_config(manifest.get('config', {}), root / EXPORT_FILE)
  try:
    records, task, model = manifest['arrays'], manifest['task'], manifest['model']
    if task not in TASKS:
      raise ValueError(f'unknown task {task!r}; expected one of {", ".join(TASKS)}')
    # The manifest lists every parameter with its shape: that is the restore target, so no
    # orbax metadata (or pickle) is needed to know the tree.
    target = nested_target(records, 'params', jf_sharding.unplaced_default())
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise CheckpointError(
      f'{root / EXPORT_FILE} is malformed ({type(e).__name__}: {e}); re-export the model'
    ) from None
  try:
    with ocp.StandardCheckpointer() as reader:
      params = reader.restore(root / 'params', target)
  except Exception as e:
    raise CheckpointError(
      f'cannot read the params of export {root} ({short_error(e)}); re-export the model'
    ) from e
  bad = integrity.checksum_mismatches({'params': params}, records)
  if bad:
    raise CheckpointError(
      f'export {root} is corrupt: checksum mismatch in {", ".join(bad[:3])}; re-export the model'
    )
  tokenizer = root / 'tokenizer'
  return Pretrained(
    config=manifest.get('config', {}),
    model_config=_model_config(model, root / EXPORT_FILE),
    params=params,
    tokenizer_dir=str(tokenizer) if tokenizer.is_dir() else None,
    task=task,
    num_classes=manifest.get('num_classes'),
    step=manifest.get('step'),
    val_loss=manifest.get('val_loss'),
  )


def _load_workdir(workdir: epath.Path) -> Pretrained:
  config = _read_run_config(workdir)
  model_config = _model_config(config['model'], workdir / 'config.json')
  step, val_loss, params = _best_params(workdir)
  tokenizer = workdir / 'tokenizer'
  return Pretrained(
    config=config,
    model_config=model_config,
    params=params,
    tokenizer_dir=str(tokenizer) if tokenizer.is_dir() else None,
    task=config['task'],
    num_classes=_num_classes(config),
    step=step,
    val_loss=val_loss,
  )


def load_pretrained(path) -> Pretrained:
  """Loads an export directory, or a training run's workdir (its best checkpoint)."""
  root = epath.Path(path).absolute()
  if (root / EXPORT_FILE).exists():
    return _load_export(root)
  if root.name == 'checkpoints' and (root.parent / 'config.json').exists():
    root = root.parent  # given <workdir>/checkpoints: the config lives one level up
  if (root / 'config.json').exists() and (root / 'checkpoints').is_dir():
    return _load_workdir(root)
  raise CheckpointError(
    f'{path} is neither an exported model (no {EXPORT_FILE}) nor a jaxformer run '
    f'workdir (config.json + checkpoints/); check the path'
  )
