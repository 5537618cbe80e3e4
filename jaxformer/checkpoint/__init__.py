"""Checkpoints that survive preemption, corruption and restarts; fine-tuning and export.

Checkpointer            save / restore training state (keep latest + best, checksums, fallback)
abstract_like           the ShapeDtypeStruct target every restore goes into
load_params_for_init    copy a pretrained run's backbone into a new model's params
export_pretrained       best params + config + tokenizer -> one self-contained directory
load_pretrained         load such a directory (or a run workdir) with one call
"""

from jaxformer.checkpoint.abstract import abstract_like
from jaxformer.checkpoint.errors import CheckpointError, CorruptCheckpointWarning
from jaxformer.checkpoint.init_from import load_params_for_init
from jaxformer.checkpoint.manager import Checkpointer, Restored
from jaxformer.checkpoint.pretrained import Pretrained, export_pretrained, load_pretrained

__all__ = [
  'CheckpointError',
  'CorruptCheckpointWarning',
  'Checkpointer',
  'Restored',
  'abstract_like',
  'load_params_for_init',
  'export_pretrained',
  'load_pretrained',
  'Pretrained',
]
