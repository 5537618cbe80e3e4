"""jaxformer: a readable JAX/Flax transformer library and one training script."""

__version__ = '0.1.0'

from jaxformer.config import ModelConfig  # noqa: E402

__all__ = ['ModelConfig', '__version__']
