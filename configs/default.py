"""Base config: every field that train.py understands, with one comment each.

Other configs import this and override what they change. Override any field from the command
line: `python train.py --config=configs/tiny.py --config.model.num_layers=2`.
"""

import dataclasses

import ml_collections

from jaxformer.config import ModelConfig


def get_model_config() -> ml_collections.ConfigDict:
  """The fields of jaxformer.ModelConfig: its defaults (jaxformer/config.py explains each field
  and its rules), except where training starts elsewhere, below."""
  fields = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
  # scan_layers takes True, False or 'auto', so its field accepts any literal (a plain field
  # would keep the type of its default, str, and refuse a bool).
  fields['scan_layers'] = ml_collections.FieldReference(fields['scan_layers'], field_type=object)
  # LoRA has its own section (c.lora below): training turns it into the lora_* model fields.
  m = ml_collections.ConfigDict({k: v for k, v in fields.items() if not k.startswith('lora_')})
  m.vocab_size = 0  # 0 = take it from the tokenizer
  m.vocab_multiple = 128  # vocab tables padded to a multiple of 128 rows: any mesh splits them
  m.num_encoder_layers = 3  # encoder layers of EncoderDecoder
  m.num_decoder_layers = 3  # decoder layers of EncoderDecoder
  m.max_len = 128  # longest sequence (LM window, classifier and translation length)
  m.dtype = 'auto'  # compute dtype: 'auto' = bfloat16 on TPU/GPU, float32 on CPU
  return m


def get_dataset_config() -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.name = 'jaxformer_shakespeare'  # TFDS name, 'jaxformer_*' (embedded) or 'files' (your own)
  d.data_dir = ''  # '' = $JAXFORMER_DATA_DIR or ~/.cache/jaxformer/tfds
  d.train_split = 'train'  # split to train on; TFDS slices work, e.g. 'train[:10%]'
  d.eval_split = 'validation'  # split for validation loss and early stopping
  d.test_split = 'test'  # split for the final report ('' = none)
  d.tokenizer = 'sentencepiece'  # 'sentencepiece' (trained on the train split) | 'byte'
  d.vocab_size = 4096  # sentencepiece vocabulary size
  d.text_key = ''  # feature holding text ('' = the dataset's default)
  d.source_key = ''  # translation source feature ('' = default)
  d.target_key = ''  # translation target feature ('' = default)
  d.label_key = ''  # classification label feature ('' = default)
  d.train_files = ''  # 'files': glob of training files, .csv/.tsv/.jsonl/.txt (comma = several)
  d.eval_files = ''  # 'files': validation files ('' = carve val_fraction from train_files)
  d.test_files = ''  # 'files': test files ('' = carve test_fraction from train_files)
  d.files = ''  # 'text_files' (older LM name): glob of .txt files; for 'files' = train_files
  d.val_fraction = 0.1  # 'files': share of training rows held out for validation (by label)
  d.test_fraction = 0.0  # 'files': share of training rows held out for test (by label)
  d.split_seed = 0  # 'files': seed that picks the held-out rows (not the training seed)
  d.pack = False  # translate, lm: several examples/documents a train row (eval unpacked)
  d.shift_windows = False  # lm: train windows start at a new seeded offset every epoch
  d.examples_per_class = 0  # classification: labelled examples per class (0 = all)
  d.download = False  # allow TFDS to download (never without asking)
  return d


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = 'lm'  # 'lm' | 'translate' | 'classify'
  c.seed = 0  # fixes init, dropout and data order
  c.batch_size = 32  # global batch (split over data-parallel devices and hosts)
  c.num_train_steps = 1000  # optimizer updates
  c.train_minutes = 0.0  # > 0: train this many minutes (steps fixed from warmup speed)
  c.eval_every_steps = 100  # validation (and a checkpoint) every N steps
  c.eval_steps = 0  # validation batches per evaluation; 0 = the whole split
  c.log_every_steps = 25  # pull metrics from the device every N steps
  c.checkpoint_every_steps = 200  # extra checkpoints between evaluations
  c.keep_last = 2  # newest checkpoints kept (the best is kept as well)
  c.keep_every_steps = 0  # > 0: also keep every checkpoint at a multiple of N steps (history)
  c.learning_rate = 1e-3  # peak learning rate
  c.lr_schedule = 'cosine'  # 'cosine' | 'rsqrt' | 'constant' (all after linear warmup)
  c.warmup_steps = 50  # linear warmup steps
  c.min_lr_ratio = 0.1  # cosine floor as a fraction of the peak
  c.weight_decay = 0.1  # decoupled (AdamW) weight decay on matrices
  c.decay_embeddings = False  # also decay the embedding tables
  c.adam_b1 = 0.9  # Adam beta1
  c.adam_b2 = 0.98  # Adam beta2
  c.grad_clip_norm = 1.0  # global-norm clipping (0 = off)
  c.grad_accum_steps = 1  # micro-batches per update (same result as one big batch)
  c.label_smoothing = 0.0  # cross-entropy label smoothing
  c.reduce_on_plateau = False  # halve the LR after 2 evaluations without a better validation metric
  c.early_stopping = ml_collections.ConfigDict()
  c.early_stopping.patience = 5  # stop at the N-th evaluation in a row without gain (0 = off)
  c.early_stopping.min_delta = 0.0  # an improvement must beat the best by more than this
  c.early_stopping.monitor = 'loss'  # stop and keep-best on 'loss' or 'error' (1 - accuracy)
  c.restore_best = True  # final model = the best validated checkpoint
  c.dataset = get_dataset_config()
  c.model = get_model_config()
  c.num_classes = 0  # classification classes (0 = from the dataset)
  c.pooling = 'mean'  # classifier pooling: 'mean' over tokens | 'last' token
  c.init_from = ''  # pretrained run or export to load the backbone from
  c.freeze_backbone = False  # fine-tuning: train only the new head
  c.backbone_lr_multiplier = 1.0  # fine-tuning: backbone learning-rate scale
  c.head_only_steps = 0  # fine-tuning: train only the head for the first N steps
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 0  # > 0: LoRA adapters of this rank; everything but them and the head is frozen
  c.lora.alpha = 16.0  # adapter update scale = alpha / rank
  c.lora.targets = 'query,value'  # projections: query,key,value,out,wi,wo (or attention, mlp)
  c.parallelism = 'mesh'  # 'mesh' (jit + NamedSharding) | 'pmap' (replicated data parallel)
  c.mesh_shape = (-1, 1)  # (data, model) device mesh; -1 = fill with the remaining devices
  c.fsdp = False  # also shard parameters' embed axis over 'data'
  c.overwrite = False  # start fresh even if the workdir holds a run (old one moved aside)
  c.sample_prompt = ''  # LM report: prompt for the sampled lines ('' = a newline)
  c.sample_tokens = 120  # LM report: tokens sampled at the end (0 = no samples)
  c.sample_temperature = 0.8  # LM report: sampling temperature
  c.progress = True  # tqdm progress bar
  return c
