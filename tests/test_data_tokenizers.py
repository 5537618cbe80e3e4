"""Tokenizers: exact round trip on the whole corpus, ids, save/load, cache, vocab-size errors."""

import os
import time

import numpy as np
import pytest

from jaxformer.data import (
  ByteTokenizer,
  DataError,
  load_tokenizer,
  shakespeare,
  train_sentencepiece,
)
from jaxformer.data.tokenizers import decode_rows, until_eos


@pytest.fixture(scope='module')
def spm_tokenizer(tmp_path_factory):
  texts = [w['text'] for w in shakespeare.split_works()['train']]
  cache = str(tmp_path_factory.mktemp('spm-cache'))
  return (
    train_sentencepiece(texts, 1000, cache_dir=cache, corpus_fingerprint='shakespeare-train'),
    cache,
    texts,
  )


def test_sentencepiece_round_trips_the_whole_corpus(spm_tokenizer):
  tok, _, _ = spm_tokenizer
  works = shakespeare.load_works()  # includes the held-out plays it never saw
  ids = tok.encode_batch([w['text'] for w in works])
  for work, row in zip(works, ids):
    assert tok.decode(row) == work['text'], work['title']
  assert sum(map(len, ids)) < 0.6 * sum(len(w['text']) for w in works)  # it actually merges
  odd = '  two  spaces\n\n\ttab \u2603 \U0001d11e caf\u00e9 \r\n'
  assert tok.decode(tok.encode(odd)) == odd  # unseen characters go through byte fallback


def test_token_bytes_add_up_to_each_texts_utf8_length(spm_tokenizer):
  tok, _, _ = spm_tokenizer
  odd = '  two  spaces\n\n\ttab \u2603 \U0001d11e caf\u00e9 \r\n'
  texts = [w['text'] for w in shakespeare.load_works()[:5]] + [odd]
  for t in (tok, ByteTokenizer()):
    sizes = t.token_bytes()
    assert sizes.shape == (t.vocab_size,)
    assert sizes[t.pad_id] == sizes[t.bos_id] == sizes[t.eos_id] == 0
    for text, ids in zip(texts, t.encode_batch(texts)):
      assert sizes[ids].sum() == len(text.encode('utf-8'))


def test_sentencepiece_ids_and_specials(spm_tokenizer):
  tok, _, _ = spm_tokenizer
  assert (tok.pad_id, tok.vocab_size) == (0, 1000)
  assert len({tok.pad_id, tok.bos_id, tok.eos_id}) == 3
  ids = tok.encode('To be')
  assert tok.bos_id not in ids and tok.eos_id not in ids  # encode adds no specials
  assert tok.decode([tok.bos_id] + ids + [tok.eos_id, 0, 0]) == 'To be'


def test_sentencepiece_cache_and_save_load(spm_tokenizer, tmp_path):
  tok, cache, texts = spm_tokenizer
  start = time.time()
  again = train_sentencepiece(texts, 1000, cache_dir=cache, corpus_fingerprint='shakespeare-train')
  assert again.model_proto == tok.model_proto and time.time() - start < 0.5
  other = train_sentencepiece(texts[:3], 500, cache_dir=cache, corpus_fingerprint='other')
  assert other.vocab_size == 500
  assert not [d for d in os.listdir(cache) if d.startswith('.tmp')]  # atomic: no temp dirs left
  tok.save(str(tmp_path / 'tok'))
  loaded = load_tokenizer(str(tmp_path / 'tok'))
  assert loaded.encode('Hamlet\n') == tok.encode('Hamlet\n') and loaded.vocab_size == 1000


def test_byte_tokenizer_round_trip_and_ids(tmp_path):
  tok = ByteTokenizer()
  text = ''.join(w['text'] for w in shakespeare.load_works()[:3]) + '\u00e9\u2603'
  assert tok.decode(tok.encode(text)) == text
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 259)
  assert min(tok.encode('\x00')) == 3
  tok.save(str(tmp_path / 'b'))
  assert isinstance(load_tokenizer(str(tmp_path / 'b')), ByteTokenizer)
  with pytest.raises(DataError, match='no tokenizer'):
    load_tokenizer(str(tmp_path / 'missing'))


@pytest.mark.parametrize('vocab_size,match', [(20, 'too small'), (100_000, 'too large')])
def test_vocab_size_out_of_range_is_a_clear_error(vocab_size, match):
  with pytest.raises(DataError, match=match):
    train_sentencepiece(['a small corpus\nof two lines\n'] * 5, vocab_size)


def test_decode_rows_cuts_each_row_at_its_first_eos():
  tok = ByteTokenizer()
  rows = np.array([tok.encode('ab') + [tok.eos_id] + tok.encode('cd'), tok.encode('abcde')])
  assert decode_rows(tok, rows) == ['ab', 'abcde']
  assert until_eos(np.array([5, tok.eos_id, 7, tok.eos_id]), tok.eos_id) == [5]
