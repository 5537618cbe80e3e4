"""Export a training run's best model to one self-contained directory.

    python -m jaxformer.export --workdir runs/shakespeare --out exports/shakespeare [--merge-lora]

The directory holds the best params (orbax format, no pickles), the model config, the task and
the tokenizer. Load it for inference or fine-tuning with `jaxformer.load_pretrained(path)`.
--merge-lora folds a LoRA run's adapters into its kernels: the export is then an ordinary model
(no lora_a / lora_b, lora_rank 0) that `python -m jaxformer.hf export` also accepts.
Errors print one line on stderr and exit with code 2.
"""

import argparse
import json
import os
import sys


def export_merged(workdir: str, out: str) -> str:
  """Like export_pretrained, with the LoRA adapters of the best params merged into the kernels."""
  from jaxformer.checkpoint import CheckpointError, load_pretrained
  from jaxformer.checkpoint.pretrained import write_export
  from jaxformer.model import lora

  if os.path.exists(out):
    raise CheckpointError(f'{out} already exists; choose a new --out directory or delete it first')
  loaded = load_pretrained(workdir)
  if not lora.has_factors(loaded.params):
    raise CheckpointError(
      f'{workdir} has no LoRA adapters (lora.rank was 0); export it without --merge-lora'
    )
  params, cfg = lora.merge(loaded.params, loaded.model_config)
  config = dict(loaded.config)
  config['model'] = cfg.to_dict()
  config['lora'] = dict(config.get('lora') or {}, rank=0)
  return write_export(
    out,
    params,
    config=config,
    model_config=cfg,
    step=loaded.step,
    val_loss=loaded.val_loss,
    source=os.path.abspath(workdir),
    tokenizer_dir=loaded.tokenizer_dir,
  )


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m jaxformer.export', description=__doc__.splitlines()[0]
  )
  parser.add_argument(
    '--workdir', required=True, help='workdir of a finished (or running) training run'
  )
  parser.add_argument('--out', required=True, help='directory to create; must not exist yet')
  parser.add_argument(
    '--merge-lora',
    action='store_true',
    help='merge LoRA adapters into the weights (an ordinary model; Hugging Face export takes it)',
  )
  args = parser.parse_args(argv)

  from jaxformer.checkpoint import CheckpointError, export_pretrained
  from jaxformer.checkpoint.pretrained import EXPORT_FILE
  from jaxformer.config import early_stopping_monitor

  try:
    if args.merge_lora:
      out = export_merged(args.workdir, args.out)
    else:
      out = export_pretrained(args.workdir, args.out)
  except (CheckpointError, ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  with open(os.path.join(out, EXPORT_FILE)) as f:
    manifest = json.load(f)
  merged = ' with LoRA merged' if args.merge_lora else ''
  print(
    f'exported step {manifest["step"]} (validation {early_stopping_monitor(manifest["config"])} '
    f'{manifest["val_loss"]}) of {args.workdir} to {out}{merged}'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
