"""Training: optimizer, steps, callbacks, the loop and the command line.

Start at loop.train_and_evaluate; main.py is the command line around it.
"""

from jaxformer.training.callbacks import Callback, EarlyStopping
from jaxformer.training.errors import ConfigError, Diverged

__all__ = ['Callback', 'ConfigError', 'Diverged', 'EarlyStopping', 'train_and_evaluate']


def train_and_evaluate(config, workdir, **kwargs):
  """See jaxformer.training.loop.train_and_evaluate (imported lazily: it pulls in orbax, tfds)."""
  from jaxformer.training.loop import train_and_evaluate as run

  return run(config, workdir, **kwargs)
