"""Base config: every field that train.py understands, with one comment each.

Other configs import this and override what they change. Override any field from the command
line: `python train.py --config=configs/tiny.py --config.model.num_layers=2`.
"""

import ml_collections


def get_model_config() -> ml_collections.ConfigDict:
  """The fields of jaxformer.ModelConfig (see jaxformer/config.py for the rules)."""
  m = ml_collections.ConfigDict()
  m.vocab_size = 0  # 0 = take it from the tokenizer
  m.d_model = 256  # residual stream width
  m.num_heads = 4  # attention heads per layer (split across the 'model' mesh axis)
  m.num_layers = 4  # decoder layers of DecoderLM / Classifier
  m.num_encoder_layers = 3  # encoder layers of EncoderDecoder
  m.num_decoder_layers = 3  # decoder layers of EncoderDecoder
  m.mlp_ratio = 4.0  # feed-forward hidden size = mlp_ratio * d_model (0 = no FFN)
  m.d_ff = 0  # explicit feed-forward size; 0 = use mlp_ratio
  m.activation = 'gelu'  # 'gelu' | 'relu' | 'swiglu'
  m.dropout_rate = 0.1  # dropout on embeddings and every residual branch
  m.attention_dropout_rate = 0.0  # dropout on attention probabilities (forces einsum attention)
  m.max_len = 128  # longest sequence (LM window, classifier and translation length)
  m.position = 'learned'  # 'learned' | 'sinusoidal' | 'rope'
  m.norm = 'pre'  # 'pre' (GPT-2 style, stable) | 'post' (2017 paper)
  m.tie_embeddings = True  # output projection shares the token embedding
  m.use_bias = True  # biases in projections
  m.scan_layers = True  # nn.scan over layers: compile time independent of depth
  m.remat = 'none'  # 'none' | 'full' | 'dots': recompute activations to save memory
  m.dtype = 'auto'  # compute dtype: 'auto' = bfloat16 on TPU/GPU, float32 on CPU
  m.param_dtype = 'float32'  # parameter storage dtype
  m.attention_impl = 'auto'  # 'auto' | 'xla' | 'cudnn' | 'einsum'
  m.layer_norm_epsilon = 1e-6  # LayerNorm epsilon
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
  d.examples_per_class = 0  # classification: labelled examples per class (0 = all)
  d.download = False  # allow TFDS to download (never without asking)
  return d


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = 'lm'  # 'lm' | 'translate' | 'classify'
  c.seed = 0  # fixes init, dropout and data order
  c.batch_size = 32  # global batch (split over data-parallel devices and hosts)
  c.num_train_steps = 1000  # optimizer updates
  c.eval_every_steps = 100  # validation (and a checkpoint) every N steps
  c.eval_steps = 0  # validation batches per evaluation; 0 = the whole split
  c.log_every_steps = 25  # pull metrics from the device every N steps
  c.checkpoint_every_steps = 200  # extra checkpoints between evaluations
  c.keep_last = 2  # newest checkpoints kept (the best is kept as well)
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
  c.reduce_on_plateau = False  # scale the LR down when validation loss plateaus
  c.early_stopping = ml_collections.ConfigDict()
  c.early_stopping.patience = 5  # stop at the N-th evaluation in a row not improving (0 = off)
  c.early_stopping.min_delta = 0.0  # an improvement must beat the best by more than this
  c.early_stopping.monitor = 'loss'  # what early stopping and best track: 'loss' | 'error'
  c.restore_best = True  # final model = the best validated checkpoint
  c.dataset = get_dataset_config()
  c.model = get_model_config()
  c.num_classes = 0  # classification classes (0 = from the dataset)
  c.pooling = 'mean'  # classifier pooling: 'mean' over tokens | 'last' token
  c.init_from = ''  # pretrained run or export to load the backbone from
  c.freeze_backbone = False  # fine-tuning: train only the new head
  c.backbone_lr_multiplier = 1.0  # fine-tuning: backbone learning-rate scale
  c.head_only_steps = 0  # fine-tuning: train only the head for the first N steps
  c.parallelism = 'mesh'  # 'mesh' (jit + NamedSharding) | 'pmap' (replicated data parallel)
  c.mesh_shape = (-1, 1)  # (data, model) device mesh; -1 = fill with the remaining devices
  c.fsdp = False  # also shard parameters' embed axis over 'data'
  c.overwrite = False  # start fresh even if the workdir holds a run (old one moved aside)
  c.sample_prompt = ''  # LM report: prompt for the sampled lines ('' = a newline)
  c.sample_tokens = 120  # LM report: tokens sampled at the end (0 = no samples)
  c.sample_temperature = 0.8  # LM report: sampling temperature
  c.progress = True  # tqdm progress bar
  return c
