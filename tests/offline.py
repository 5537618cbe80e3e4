"""`python tests/offline.py TARGET ARGS...`: runs TARGET (a script or a module name) as
`python TARGET ARGS` would, on a machine without a network: every TCP connection fails at once,
as it does with no route to the host. What a user with the 'prepare' extra sees offline.
"""

import socket

from run_target import run_target


def _unreachable(*args, **kwargs):
  raise OSError(101, 'Network is unreachable')


if __name__ == '__main__':
  socket.create_connection = _unreachable
  socket.socket.connect = _unreachable
  run_target()
