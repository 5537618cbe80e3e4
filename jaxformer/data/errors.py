"""The one error type the data layer raises for bad input.

`DataError` subclasses ValueError, so callers that already catch ValueError keep working; the
train script maps it to exit code 2 (bad usage), as opposed to a crash. Its message is one line
that names the problem and says what to do.
"""


class DataError(ValueError):
  """Bad data input: unknown dataset/config/split, empty corpus, bad bytes, bad labels, ..."""
