"""Tokenizers with one interface: encode, decode, vocab_size, pad_id (= 0), bos_id, eos_id, save.

  ByteTokenizer           UTF-8 bytes shifted by 3, after pad=0, bos=1, eos=2 (vocab 259). Needs no
                          training; used for the numbers task and as a zero-training fallback.
  SentencePieceTokenizer  BPE trained with the `sentencepiece` package on the train split only,
                          cached on disk by a hash of its inputs and settings.
  BytePairTokenizer       GPT-2's byte-level BPE (jaxformer.data.bpe), read from a Hugging Face
                          model's files by `python -m jaxformer.hf import`; never trained here.
                          GPT-2's ids shifted by 1 after pad=0 (GPT-2's own 0 is '!').

Both round-trip text exactly: decode(encode(s)) == s for every str s. For SentencePiece that
takes identity normalisation, no whitespace collapsing, no dummy-prefix space, '\\n' as a user
symbol (so newlines survive) and byte fallback (so unseen characters become bytes, not <unk>).

encode() adds no special tokens; the pipelines add BOS/EOS where the task needs them.
decode_rows(tokenizer, rows) turns a batch of generated ids back into text, each row cut at EOS.
"""

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm

from jaxformer.data.errors import DataError
from jaxformer.data.inside import read_inside

TOKENIZER_JSON = 'tokenizer.json'
TOKENIZER_DIR = 'the tokenizer directory'  # how a refusal names it
SPM_MODEL = 'spm.model'
# SentencePiece skips training "sentences" over max_sentence_length (4192 bytes by default), so
# documents are fed in newline-aligned chunks below that.
_CHUNK_BYTES = 4000
# Enough text to learn an 8k-32k BPE vocabulary; bigger corpora are subsampled evenly.
MAX_TRAIN_CHARS = 50_000_000


class ByteTokenizer:
  """UTF-8 bytes as tokens: id = byte + 3, after pad=0, bos=1, eos=2."""

  pad_id, bos_id, eos_id = 0, 1, 2
  _offset = 3
  vocab_size = 256 + _offset
  kind = 'byte'

  def encode(self, text: str) -> list[int]:
    return [b + self._offset for b in text.encode('utf-8')]

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    data = bytes(int(i) - self._offset for i in ids if int(i) >= self._offset)
    return data.decode('utf-8', errors='replace')  # a model may emit a cut multi-byte char

  def token_bytes(self) -> np.ndarray:
    """int64[vocab_size]: UTF-8 bytes each id stands for (0 for pad, BOS, EOS)."""
    return (np.arange(self.vocab_size) >= self._offset).astype(np.int64)

  def fingerprint(self) -> str:
    return 'byte-v1'

  def save(self, directory: str) -> None:
    atomic_write_dir(directory, {TOKENIZER_JSON: json.dumps({'type': 'byte'}).encode()})


class SentencePieceTokenizer:
  """A trained SentencePiece model; ids: pad=0, unk=1, bos=2, eos=3, then '\\n', bytes, merges."""

  kind = 'sentencepiece'

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self._sp.get_piece_size()
    self.pad_id, self.bos_id, self.eos_id = self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id()
    self._specials = {self.pad_id, self.bos_id, self.eos_id}

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text, out_type=int)

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return self._sp.encode(list(texts), out_type=int, num_threads=os.cpu_count() or 1)

  def decode(self, ids) -> str:
    return self._sp.decode([int(i) for i in ids if int(i) not in self._specials])

  def token_bytes(self) -> np.ndarray:
    """int64[vocab_size]: UTF-8 bytes each id stands for (0 for specials).

    Encoding is lossless (see the module docstring), so a text's ids add up to its byte length:
    a piece's '\u2581' is one space, a byte-fallback piece <0xNN> is one byte.
    """
    sp = self._sp

    def size(i: int) -> int:
      if sp.is_control(i) or sp.is_unknown(i):
        return 0
      if sp.is_byte(i):
        return 1
      return len(sp.id_to_piece(i).replace('\u2581', ' ').encode('utf-8'))

    return np.array([size(i) for i in range(self.vocab_size)], np.int64)

  def fingerprint(self) -> str:
    return 'spm-' + hashlib.sha256(self.model_proto).hexdigest()[:16]

  def save(self, directory: str) -> None:
    meta = {'type': 'sentencepiece', 'model_file': SPM_MODEL, 'vocab_size': self.vocab_size}
    atomic_write_dir(
      directory, {SPM_MODEL: self.model_proto, TOKENIZER_JSON: json.dumps(meta).encode()}
    )


def load_tokenizer(directory: str):
  """Loads a tokenizer written by `save(directory)`; reads only regular files inside it."""
  path = os.path.join(directory, TOKENIZER_JSON)
  if not os.path.exists(path):
    raise DataError(
      f'no tokenizer in {directory} ({TOKENIZER_JSON} missing); train one or point to a saved one'
    )
  try:
    meta = json.loads(read_inside(directory, TOKENIZER_JSON, TOKENIZER_DIR))
  except (ValueError, UnicodeDecodeError) as e:
    raise DataError(f'{path} is not valid JSON ({e}); re-save the tokenizer') from None
  kind = meta.get('type') if isinstance(meta, dict) else None
  if kind == 'byte':
    return ByteTokenizer()
  if kind == 'sentencepiece':
    model_file = meta.get('model_file')
    if not isinstance(model_file, str) or not model_file:
      raise DataError(f"{path} has no 'model_file'; re-save the tokenizer")
    try:
      return SentencePieceTokenizer(read_inside(directory, model_file, TOKENIZER_DIR))
    except RuntimeError as e:  # sentencepiece's parse error
      raise DataError(f'{directory}/{model_file} is not a SentencePiece model ({e})') from None
  if kind == 'gpt2_bpe':
    from jaxformer.data.bpe import load_bpe

    return load_bpe(directory, meta)
  raise DataError(f'unknown tokenizer type {kind!r} in {path}')


def until_eos(row, eos_id: int) -> list[int]:
  """Token ids before the first EOS (the whole row if there is none)."""
  row = [int(t) for t in np.asarray(row).tolist()]
  return row[: row.index(eos_id)] if eos_id in row else row


def decode_rows(tokenizer, rows) -> list[str]:
  """int[B, T] decoder outputs -> B strings, each cut at its EOS."""
  return [tokenizer.decode(until_eos(row, tokenizer.eos_id)) for row in np.asarray(rows)]


def train_sentencepiece(
  texts: Iterable[str], vocab_size: int, *, cache_dir: str = '', corpus_fingerprint: str = ''
) -> SentencePieceTokenizer:
  """Trains a BPE model on `texts` (an iterable of documents), or loads it from the cache.

  The cache key hashes the corpus fingerprint and every training setting, so a changed corpus or
  setting trains a new model; without `corpus_fingerprint` nothing is cached.
  """
  settings = _settings(vocab_size)
  hashed = {k: v for k, v in settings.items() if k != 'num_threads'}  # same model on any machine
  key = hashlib.sha256(
    json.dumps(
      [corpus_fingerprint, hashed, spm.__version__, MAX_TRAIN_CHARS], sort_keys=True
    ).encode()
  ).hexdigest()[:20]
  cached = os.path.join(cache_dir, f'spm-{key}') if cache_dir and corpus_fingerprint else ''
  if cached and os.path.exists(os.path.join(cached, TOKENIZER_JSON)):
    return load_tokenizer(cached)
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(sentence_iterator=_chunks(texts), model_writer=model, **settings)
  except RuntimeError as e:
    raise _vocab_error(str(e), vocab_size) from None
  tokenizer = SentencePieceTokenizer(model.getvalue())
  if cached:
    tokenizer.save(cached)
  return tokenizer


def _settings(vocab_size: int) -> dict:
  return dict(
    model_type='bpe',
    vocab_size=int(vocab_size),
    character_coverage=1.0,
    pad_id=0,
    unk_id=1,
    bos_id=2,
    eos_id=3,
    normalization_rule_name='identity',
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    user_defined_symbols=['\n'],
    byte_fallback=True,
    allow_whitespace_only_pieces=True,
    split_digits=True,
    input_sentence_size=2_000_000,
    shuffle_input_sentence=True,
    num_threads=os.cpu_count() or 1,
    minloglevel=2,
  )


def _chunks(texts: Iterable[str]):
  """Yields newline-aligned pieces of each text, each under _CHUNK_BYTES, up to MAX_TRAIN_CHARS."""
  total = 0
  for text in texts:
    piece = []
    size = 0
    for line in text.splitlines(keepends=True):
      n = len(line.encode('utf-8'))
      if piece and size + n > _CHUNK_BYTES:
        yield ''.join(piece)
        piece, size = [], 0
      while n > _CHUNK_BYTES:  # a single huge line: cut it by characters
        yield line[: _CHUNK_BYTES // 4]
        line = line[_CHUNK_BYTES // 4 :]
        n = len(line.encode('utf-8'))
      piece.append(line)
      size += n
    if piece:
      yield ''.join(piece)
    total += len(text)
    if total >= MAX_TRAIN_CHARS:
      return


def _vocab_error(message: str, vocab_size: int) -> DataError:
  """Turns SentencePiece's trainer errors into one actionable line."""
  low = re.search(r'smaller than required_chars\. (\d+) vs (\d+)', message)
  high = re.search(
    r'Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)', message
  )
  if low:
    return DataError(
      f'vocab_size {vocab_size} is too small for this corpus: SentencePiece needs at least '
      f'{int(low.group(2)) + 1} (specials, bytes and characters); raise dataset.vocab_size'
    )
  if high:
    return DataError(
      f'vocab_size {vocab_size} is too large for this corpus: at most {high.group(2)} pieces '
      f'can be learned from it; lower dataset.vocab_size or use a bigger corpus'
    )
  if 'empty' in message.lower() or 'no sentence' in message.lower():
    return DataError("the tokenizer's training corpus is empty; check the train split")
  return DataError(
    f'SentencePiece training failed (vocab_size={vocab_size}): {message.splitlines()[0]}'
  )


def atomic_write_dir(directory: str, files: dict) -> None:
  """Writes `files` into `directory` all-or-nothing: a temp dir, then a rename."""
  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.tmp-tokenizer-', dir=parent)
  try:
    for name, data in files.items():
      with open(os.path.join(tmp, name), 'wb') as f:
        f.write(data)
    if os.path.isdir(directory):
      # Replacing an existing tokenizer dir (rare: re-saving into a workdir) is two renames.
      old = tempfile.mkdtemp(prefix='.old-tokenizer-', dir=parent)
      os.replace(directory, os.path.join(old, 'dir'))
      os.replace(tmp, directory)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, directory)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
