"""What the sections of docs/results.md share: a number or a dash, and when a part was measured."""

from __future__ import annotations

# Parts measured before bench/quality.py recorded a date and commit per part.
_UNRECORDED = {'date': '2026-11-29', 'note': 'before the issue 16 fixes'}


def measured_before(results: dict, part: str) -> dict:
  return results.get('measured', {}).get(part, _UNRECORDED)


def when(m: dict) -> str:
  """'2026-12-02 at commit abc1234', or the date and a note for older records."""
  text = m['date'] + (f' at commit {m["commit"]}' if m.get('commit') else '')
  return text + (f', {m["note"]}' if m.get('note') else '')


def stamp(m: dict) -> tuple:
  """When and at which commit: two records with the same stamp differ only in their notes."""
  return m.get('date'), m.get('commit')


def provenance(r: dict, part: str) -> list[str]:
  return [f'Measured {when(measured_before(r, part))}.', '']


def num(x, digits=3):
  return '—' if x is None else f'{x:.{digits}f}'
