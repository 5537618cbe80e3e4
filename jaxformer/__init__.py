"""jaxformer: a readable JAX/Flax transformer library and one training script."""

__version__ = '0.1.0'

# Before anything imports jax: malloc settings that keep XLA:CPU from page-faulting its
# temporaries in every step (jaxformer.host_memory says why and when they apply).
from jaxformer import host_memory  # noqa: E402

host_memory.keep_freed_memory()

from jaxformer.config import ModelConfig  # noqa: E402

__all__ = ['ModelConfig', '__version__']
