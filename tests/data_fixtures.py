"""Helpers for tests/test_data_*.py (their prepared-from-scratch `data_dir` is in conftest.py)."""


def cfg(name, data_dir, **kw):
  return {'name': name, 'data_dir': data_dir, **kw}
