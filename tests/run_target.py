"""The end of the tests' wrapper scripts (without_tensorflow.py, offline.py): run TARGET, a
script or a module name, as `python TARGET ARGS` would, once the wrapper has changed the world."""

import runpy
import sys


def run_target() -> None:
  """Runs sys.argv[1] with the arguments after it, as __main__."""
  target = sys.argv.pop(1)
  sys.argv[0] = target
  if target.endswith('.py'):
    runpy.run_path(target, run_name='__main__')
  else:
    runpy.run_module(target, run_name='__main__', alter_sys=True)
