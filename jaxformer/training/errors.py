"""Errors the command line turns into exit codes (2: bad input, 3: diverged)."""


class ConfigError(ValueError):
  """A bad configuration or command line. Exit code 2, one line, nothing written."""


class Diverged(RuntimeError):
  """The loss or the gradients became NaN/Inf. Exit code 3; the last good checkpoint is kept."""

  def __init__(self, step: int, what: str = 'loss', last_good: int | None = None):
    kept = (
      f'the last good checkpoint (step {last_good}) is kept'
      if last_good is not None
      else 'no checkpoint was saved'
    )
    super().__init__(
      f'training diverged: non-finite {what} at step {step}; {kept} (lower learning_rate or '
      'raise warmup_steps, then re-run with a new workdir)'
    )
    self.step = step
