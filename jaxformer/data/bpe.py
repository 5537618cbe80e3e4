"""GPT-2's byte-level BPE as a jaxformer tokenizer, through Hugging Face's `tokenizers` library.

    tok = BytePairTokenizer.from_files(vocab_json, merges_txt)   # or from_tokenizer_json(path)
    tok.encode('Hello world!') -> [15497, 996, 1]   (GPT-2's own files: its ids 15496, 995, 0)

Same interface as ByteTokenizer and SentencePieceTokenizer (encode, decode, vocab_size, pad_id,
bos_id, eos_id, save). GPT-2 has one special token, '<|endoftext|>', which is both BOS and EOS.

Ids are GPT-2's shifted by ID_OFFSET = 1: jaxformer id = GPT-2 id + 1, and id 0 is padding, as
for every jaxformer tokenizer (GPT-2's own id 0 is the real token '!', which would otherwise be
masked as padding). vocab_size is GPT-2's plus one (50258 for GPT-2 itself). The Hugging Face
import inserts a padding row 0 into the embedding to match, and the export removes it
(jaxformer.checkpoint.hf_gpt2).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from jaxformer.data.errors import DataError

END_OF_TEXT = '<|endoftext|>'
BPE_FILE = 'bpe.json'  # the `tokenizers` library's own serialisation, inside a tokenizer dir
ID_OFFSET = 1  # jaxformer id = GPT-2 id + ID_OFFSET; id 0 is padding


class BytePairTokenizer:
  """GPT-2 byte-level BPE: no prefix space, '<|endoftext|>' as BOS and EOS, pad id 0, and every
  GPT-2 id shifted up by ID_OFFSET."""

  kind = 'gpt2_bpe'
  pad_id = 0

  def __init__(self, tokenizer: Tokenizer):
    self._tok = tokenizer
    eot = tokenizer.token_to_id(END_OF_TEXT)
    if eot is None:
      raise DataError(f"the BPE vocabulary has no {END_OF_TEXT!r} token; it is not GPT-2's")
    self.bos_id = self.eos_id = eot + ID_OFFSET
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True) + ID_OFFSET

  @classmethod
  def from_files(cls, vocab_file: str, merges_file: str) -> BytePairTokenizer:
    """From GPT-2's `vocab.json` + `merges.txt`, set up as transformers' GPT2TokenizerFast."""
    try:
      bpe = models.BPE.from_file(vocab_file, merges_file)
    except Exception as e:  # the library raises plain Exception for unreadable files
      raise DataError(
        f'cannot read the BPE files {vocab_file} / {merges_file} ({e}); '
        "pass GPT-2's vocab.json and merges.txt"
      ) from None
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([END_OF_TEXT])
    return cls(tokenizer)

  @classmethod
  def from_tokenizer_json(cls, path: str) -> BytePairTokenizer:
    """From a Hugging Face `tokenizer.json` (the fast tokenizer's single file)."""
    try:
      tokenizer = Tokenizer.from_file(path)
    except Exception as e:
      raise DataError(f'cannot read {path} as a Hugging Face tokenizer.json ({e})') from None
    if not isinstance(tokenizer.model, models.BPE):
      raise DataError(f'{path} is not a BPE tokenizer; GPT-2 uses byte-level BPE')
    return cls(tokenizer)

  def encode(self, text: str) -> list[int]:
    return [i + ID_OFFSET for i in self._tok.encode(text, add_special_tokens=False).ids]

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    encoded = self._tok.encode_batch(list(texts), add_special_tokens=False)
    return [[i + ID_OFFSET for i in e.ids] for e in encoded]

  def decode(self, ids) -> str:
    # Padding and '<|endoftext|>' are dropped like the other tokenizers' pad/BOS/EOS.
    gpt2_ids = [int(i) - ID_OFFSET for i in ids if int(i) != self.pad_id]
    return self._tok.decode(gpt2_ids, skip_special_tokens=True)

  def token_bytes(self) -> np.ndarray:
    """int64[vocab_size]: bytes each id stands for (0 for padding and '<|endoftext|>').

    Byte-level BPE writes each byte as one character of its 256-symbol alphabet, so a piece's
    length in characters is its length in bytes (what bits per byte divides by).
    """
    sizes = np.zeros(self.vocab_size, np.int64)
    for piece, i in self._tok.get_vocab(with_added_tokens=True).items():
      sizes[i + ID_OFFSET] = len(piece)
    for i in self._tok.get_added_tokens_decoder():
      sizes[i + ID_OFFSET] = 0
    return sizes

  def fingerprint(self) -> str:
    # 'v2': ids shifted by ID_OFFSET, so caches of the unshifted ids are never reused.
    return 'gpt2bpe-v2-' + hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

  def to_json(self) -> str:
    return self._tok.to_str()

  def save_vocab_and_merges(self, directory: str) -> list[str]:
    """Writes GPT-2's `vocab.json` and `merges.txt` into an existing directory."""
    return self._tok.model.save(directory)

  def save(self, directory: str) -> None:
    from jaxformer.data.tokenizers import TOKENIZER_JSON, atomic_write_dir

    meta = {
      'type': self.kind,
      'model_file': BPE_FILE,
      'vocab_size': self.vocab_size,
      'id_offset': ID_OFFSET,
    }
    atomic_write_dir(
      directory, {BPE_FILE: self.to_json().encode(), TOKENIZER_JSON: json.dumps(meta).encode()}
    )


def load_bpe(directory: str, meta: dict) -> BytePairTokenizer:
  """The tokenizer that `BytePairTokenizer.save(directory)` wrote (meta: its tokenizer.json)."""
  from jaxformer.data.inside import file_inside
  from jaxformer.data.tokenizers import TOKENIZER_DIR, TOKENIZER_JSON

  if meta.get('id_offset') != ID_OFFSET:
    # Saved before ids were shifted: its model's embedding rows are GPT-2's ids, unshifted.
    raise DataError(
      f'{directory}/{TOKENIZER_JSON} has id_offset={meta.get("id_offset")!r}, not {ID_OFFSET}: '
      'the GPT-2 import it belongs to predates padding id 0; import the model again with '
      'python -m jaxformer.hf import'
    )
  return BytePairTokenizer.from_tokenizer_json(
    file_inside(directory, meta.get('model_file'), TOKENIZER_DIR)
  )


def load_hf_tokenizer(directory: str) -> BytePairTokenizer:
  """GPT-2's tokenizer from a Hugging Face model directory: vocab.json + merges.txt, else
  tokenizer.json."""
  vocab, merges = os.path.join(directory, 'vocab.json'), os.path.join(directory, 'merges.txt')
  if os.path.isfile(vocab) and os.path.isfile(merges):
    return BytePairTokenizer.from_files(vocab, merges)
  fast = os.path.join(directory, 'tokenizer.json')
  if os.path.isfile(fast):
    return BytePairTokenizer.from_tokenizer_json(fast)
  raise DataError(
    f'{directory} has no tokenizer: expected vocab.json + merges.txt or tokenizer.json '
    '(download them with the model)'
  )


def write_hf_tokenizer(tokenizer: BytePairTokenizer, directory: str) -> None:
  """Writes vocab.json, merges.txt and tokenizer.json (what GPT2Tokenizer[Fast] reads)."""
  tokenizer.save_vocab_and_merges(directory)
  with tempfile.NamedTemporaryFile('w', dir=directory, delete=False, suffix='.tmp') as f:
    f.write(tokenizer.to_json())
  os.replace(f.name, os.path.join(directory, 'tokenizer.json'))
