"""`python tests/without_tensorflow.py TARGET ARGS...`: runs TARGET (a script or a module name) as
`python TARGET ARGS` would, but with `import tensorflow` failing as if it were not installed, so
tests see what a user without the 'prepare' extra sees even where the extra is installed.
"""

import sys

from run_target import run_target


class _HideTensorFlow:
  """Wraps a meta path finder so that it never finds tensorflow (tensorflow_datasets still imports).

  Every finder must say "not found": tfds and etils ask importlib.util.find_spec('tensorflow')
  whether TF is installed, and a finder that raised instead would break them.
  """

  def __init__(self, finder):
    self.finder = finder

  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] == 'tensorflow':
      return None
    return self.finder.find_spec(name, path, target)

  def __getattr__(self, attr):
    return getattr(self.finder, attr)


if __name__ == '__main__':
  sys.meta_path[:] = [_HideTensorFlow(finder) for finder in sys.meta_path]
  run_target()
