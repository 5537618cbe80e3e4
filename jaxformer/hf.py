"""GPT-2 checkpoints in and out of the Hugging Face format.

    python -m jaxformer.hf import DIR --output EXPORT [--dataset jaxformer_shakespeare]
    python -m jaxformer.hf export RUN_OR_EXPORT --output DIR

import reads a Hugging Face GPT-2 directory (config.json, model.safetensors, vocab.json +
merges.txt or tokenizer.json) and writes a jaxformer export: load_pretrained, generate,
evaluate (on --dataset) and init_from take it like any other. export writes config.json,
model.safetensors and the tokenizer files of a DecoderLM whose config GPT-2 can express, which
transformers' GPT2LMHeadModel.from_pretrained loads. Weights are read and written with the
`safetensors` numpy API: no torch, and no pickle is ever loaded (pytorch_model.bin is refused).
Ids inside jaxformer are GPT-2's plus one (id 0 is padding): import adds the padding row to the
embedding and export removes it (jaxformer.checkpoint.hf_gpt2.add_padding_rows).
Errors print one line on stderr, exit with code 2 and leave nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import numpy as np

from jaxformer import cli

SAFETENSORS = 'model.safetensors'
SAFETENSORS_INDEX = 'model.safetensors.index.json'


def build_parser() -> cli.Parser:
  p = cli.Parser(prog='python -m jaxformer.hf', description=__doc__.splitlines()[0])
  commands = p.add_subparsers(dest='command', required=True)
  imp = commands.add_parser('import', help='Hugging Face GPT-2 directory -> jaxformer export')
  imp.add_argument('directory', help='directory with config.json and model.safetensors')
  imp.add_argument('--output', required=True, help='export directory to create; must not exist')
  imp.add_argument(
    '--dataset',
    default='jaxformer_shakespeare',
    help='language-modelling dataset that `python -m jaxformer.evaluate` scores the export on',
  )
  exp = commands.add_parser('export', help='jaxformer run or export -> Hugging Face GPT-2')
  exp.add_argument('model', help='training run workdir or export directory')
  exp.add_argument('--output', required=True, help='directory to create; must not exist')
  return p


# ----- import -----


def import_gpt2(directory: str, output: str, dataset: str = 'jaxformer_shakespeare') -> str:
  """Converts the Hugging Face GPT-2 in `directory` into a jaxformer export at `output`."""
  import jax
  import jax.numpy as jnp

  from jaxformer.checkpoint import CheckpointError
  from jaxformer.checkpoint.hf_gpt2 import (
    add_padding_rows,
    canonical_names,
    model_config_from_hf,
    params_from_hf,
  )
  from jaxformer.checkpoint.pretrained import write_export
  from jaxformer.data.bpe import ID_OFFSET, load_hf_tokenizer

  if not os.path.isdir(directory):
    raise CheckpointError(f'{directory} is not a directory; pass a Hugging Face GPT-2 directory')
  _refuse_existing(output)
  config_path = os.path.join(directory, 'config.json')
  hf_config = _read_json(config_path)
  cfg = model_config_from_hf(hf_config, config_path)
  tensors = canonical_names(read_safetensors(directory))
  weights = os.path.join(directory, SAFETENSORS)
  params = params_from_hf(tensors, cfg, weights)
  # The tokenizer shifts GPT-2's ids past jaxformer's padding id 0; the model follows it.
  cfg, params = add_padding_rows(cfg, params, ID_OFFSET)
  tokenizer = load_hf_tokenizer(directory)
  if tokenizer.vocab_size > cfg.vocab_size:
    raise CheckpointError(
      f'the tokenizer in {directory} has {tokenizer.vocab_size - ID_OFFSET} tokens but '
      f'config.json vocab_size={cfg.vocab_size - ID_OFFSET}; the tokenizer files belong to '
      'another model'
    )
  run_config = {
    'task': 'lm',
    'model': cfg.to_dict(),
    'dataset': {'name': dataset},
    'batch_size': 8,
    'seed': 0,
    'imported_from': {'format': 'huggingface-gpt2', 'directory': os.path.abspath(directory)},
  }
  with tempfile.TemporaryDirectory(prefix='.jaxformer-hf-import-') as tmp:
    tokenizer_dir = os.path.join(tmp, 'tokenizer')
    tokenizer.save(tokenizer_dir)
    return write_export(
      output,
      jax.tree.map(jnp.asarray, params),
      config=run_config,
      model_config=cfg,
      step=None,
      val_loss=None,
      source=os.path.abspath(directory),
      tokenizer_dir=tokenizer_dir,
    )


def read_safetensors(directory: str) -> dict[str, np.ndarray]:
  """Every tensor of the model's safetensors file(s), as numpy arrays (no torch, no pickle)."""
  from safetensors.numpy import load_file

  from jaxformer.checkpoint import CheckpointError

  single, index = os.path.join(directory, SAFETENSORS), os.path.join(directory, SAFETENSORS_INDEX)
  if os.path.isfile(single):
    files = [single]
  elif os.path.isfile(index):
    weight_map = _read_json(index).get('weight_map') or {}
    files = [os.path.join(directory, name) for name in sorted(set(weight_map.values()))]
    if not files:
      raise CheckpointError(f'{index} has no weight_map; download the model again')
  elif os.path.isfile(os.path.join(directory, 'pytorch_model.bin')):
    raise CheckpointError(
      f'{directory} has only pytorch_model.bin, a pickle that cannot be read without running '
      f'code from the file; download model.safetensors instead (the hub has it for gpt2)'
    )
  else:
    raise CheckpointError(f'{directory} has no {SAFETENSORS}; download the model weights into it')
  tensors = {}
  for path in files:
    if not os.path.isfile(path):
      raise CheckpointError(f'{path} is missing (named in {SAFETENSORS_INDEX}); download it again')
    try:
      tensors.update(load_file(path))
    except Exception as e:  # safetensors raises its own error type or OSError for a bad file
      message = ' '.join(str(e).split())
      raise CheckpointError(
        f'{path} is not a readable safetensors file ({message}); it may be truncated: '
        'download it again'
      ) from None
  return tensors


# ----- export -----


def export_gpt2(model_path: str, output: str) -> str:
  """Writes the DecoderLM of a run or export as a Hugging Face GPT-2 directory at `output`."""
  from safetensors.numpy import save_file

  from jaxformer.checkpoint import CheckpointError, load_pretrained
  from jaxformer.checkpoint.hf_gpt2 import (
    drop_padding_rows,
    gpt2_incompatibility,
    hf_config_from_model,
    hf_from_params,
  )
  from jaxformer.data import load_tokenizer
  from jaxformer.data.bpe import ID_OFFSET, BytePairTokenizer, write_hf_tokenizer

  _refuse_existing(output)
  loaded = load_pretrained(model_path)
  if loaded.task != 'lm':
    raise CheckpointError(
      f"{model_path} holds a '{loaded.task}' model (task); only language models (task 'lm') "
      'can be written as GPT-2'
    )
  cfg = loaded.model_config
  reason = gpt2_incompatibility(cfg)
  if reason:
    raise CheckpointError(f'{model_path} cannot be written as GPT-2: {reason}')
  if _has_lora(loaded.params):
    raise CheckpointError(
      f'{model_path} holds LoRA factors; merge them first with '
      'python -m jaxformer.export --merge-lora, then export the merged model'
    )
  tokenizer = load_tokenizer(loaded.tokenizer_dir) if loaded.tokenizer_dir else None
  if not isinstance(tokenizer, BytePairTokenizer):
    kind = getattr(tokenizer, 'kind', 'none')
    raise CheckpointError(
      f"{model_path} has tokenizer kind {kind!r}; a GPT-2 directory needs GPT-2's byte-level "
      'BPE (fine-tune from an imported GPT-2 to keep its tokenizer)'
    )
  # Back to GPT-2's own ids: without the padding rows the tokenizer's ID_OFFSET put before them.
  if tokenizer.vocab_size > cfg.vocab_size:
    raise CheckpointError(
      f'{model_path}: its tokenizer has {tokenizer.vocab_size} ids but ModelConfig.vocab_size='
      f'{cfg.vocab_size}; the model and its tokenizer do not belong together'
    )
  hf_cfg, params = drop_padding_rows(cfg, loaded.params, ID_OFFSET, tokenizer.vocab_size)
  tensors = {k: v.astype(np.float32) for k, v in hf_from_params(params, hf_cfg).items()}
  out = os.path.abspath(output)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.hf-tmp-', dir=parent)
  try:
    with open(os.path.join(tmp, 'config.json'), 'w') as f:
      hf_config = hf_config_from_model(hf_cfg, tokenizer.eos_id - ID_OFFSET)
      json.dump(hf_config, f, indent=2, sort_keys=True)
    save_file(tensors, os.path.join(tmp, SAFETENSORS), metadata={'format': 'pt'})
    write_hf_tokenizer(tokenizer, tmp)
    os.replace(tmp, out)  # atomic: the directory is absent or complete
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out


def _has_lora(params) -> bool:
  import jax

  return any(
    'lora_' in jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)
  )


# ----- helpers -----


def _refuse_existing(output: str) -> None:
  from jaxformer.checkpoint import CheckpointError

  if os.path.exists(output):
    raise CheckpointError(f'{output} already exists; choose a new --output or delete it first')


def _read_json(path: str) -> dict:
  from jaxformer.checkpoint import CheckpointError

  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise CheckpointError(f'{path} is missing; download it with the model') from None
  except ValueError as e:
    raise CheckpointError(f'{path} is not valid JSON ({e}); download it again') from None
  if not isinstance(data, dict):
    raise CheckpointError(f'{path} is not a JSON object; download it again')
  return data


def _main(args) -> int:
  if args.command == 'import':
    out = import_gpt2(args.directory, args.output, args.dataset)
    print(f'imported {args.directory} to {out}', flush=True)
  else:
    out = export_gpt2(args.model, args.output)
    print(f'exported {args.model} to {out} (Hugging Face GPT-2)', flush=True)
  return 0


def main(argv=None) -> int:
  return cli.run_cli(_main, build_parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
