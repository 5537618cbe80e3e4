"""Export a training run's best model to one self-contained directory.

    python -m jaxformer.export --workdir runs/shakespeare --out exports/shakespeare

The directory holds the best params (orbax format, no pickles), the model config, the task and
the tokenizer. Load it for inference or fine-tuning with `jaxformer.load_pretrained(path)`.
Errors print one line on stderr and exit with code 2.
"""

import argparse
import json
import os
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m jaxformer.export', description=__doc__.splitlines()[0]
  )
  parser.add_argument(
    '--workdir', required=True, help='workdir of a finished (or running) training run'
  )
  parser.add_argument('--out', required=True, help='directory to create; must not exist yet')
  args = parser.parse_args(argv)

  from jaxformer.checkpoint import CheckpointError, export_pretrained
  from jaxformer.checkpoint.pretrained import EXPORT_FILE

  try:
    out = export_pretrained(args.workdir, args.out)
  except (CheckpointError, ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  with open(os.path.join(out, EXPORT_FILE)) as f:
    manifest = json.load(f)
  print(
    f'exported step {manifest["step"]} (validation {manifest.get("monitor", "loss")} {manifest["val_loss"]}) '
    f'of {args.workdir} to {out}'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
