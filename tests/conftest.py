"""Test-wide setup: 8 simulated CPU devices, set before jax is first imported.

Multi-device code (meshes, sharded heads, pmap) is tested on these host devices, so the same
tests run on any laptop or CI machine.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep prepared datasets and tokenizer caches out of the user's home during tests.
os.environ.setdefault("JAXFORMER_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "jaxformer-data"))
