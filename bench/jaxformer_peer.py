"""jaxformer as a plug-in peer of the shared peer benchmark (../shared/bench/peers_bench.py).

Run from the repository root, in the peers' own virtual environment (never jaxformer's):
    .venv-peers/bin/python /work/shared/bench/peers_bench.py --config S \
        --which torch_eager,flax_hf --extra bench.jaxformer_peer:make_peer --threads 1

peers_bench puts the working directory on sys.path and calls `make_peer(cfg, seed)` in a
worker process. The peer trains jaxformer's own DecoderLM through the same code the training
loop uses (`make_optimizer` + `make_train_step`, jitted with the train state donated) on the
benchmark's synthetic batches, with the benchmark's AdamW (lr 3e-4, betas 0.9/0.95, eps 1e-8,
wd 0.1, no clipping) and dropout 0.1 on embeddings, residual branches and, like GPT-2's
attn_pdrop, on the attention probabilities.

The Peer interface is duck-typed (this module does not import peers_bench): attributes name,
kind, tokens_per_step, n_params_counted, info, jit_on_first_call; methods setup(),
compile() -> seconds, step() -> loss (blocks until the update is done).
"""
from __future__ import annotations

import os
import sys
import time
import types

# Running as `python peers_bench.py --extra bench.jaxformer_peer:make_peer` from the repo root
# makes `bench` importable; this also makes `jaxformer` importable without installing it.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# The benchmark's optimizer (peers_bench.OPT), spelled as a jaxformer training config.
OPT = dict(learning_rate=3e-4, adam_b1=0.9, adam_b2=0.95, weight_decay=0.1)


def synthetic_batches(cfg: dict, n: int = 4, seed: int = 1234):
    """The benchmark's batches (same generator and seed as peers_bench.make_batches):
    n arrays int32[batch, block_size + 1]; inputs are [:, :-1] and targets [:, 1:]."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return [rng.integers(0, cfg["vocab"], size=(cfg["batch"], cfg["block_size"] + 1), dtype=np.int32)
            for _ in range(n)]


def model_config(cfg: dict, **overrides):
    """The benchmark's GPT-2 shape as a jaxformer ModelConfig (fp32, learned positions, tied head)."""
    from jaxformer.config import ModelConfig
    fields = dict(vocab_size=cfg["vocab"], d_model=cfg["n_embd"], num_heads=cfg["n_head"],
                  num_layers=cfg["n_layer"], max_len=cfg["block_size"], dropout_rate=cfg["dropout"],
                  attention_dropout_rate=cfg["dropout"], layer_norm_epsilon=1e-5, dtype="float32")
    fields.update(overrides)
    return ModelConfig(**fields)


def optimizer_config(**overrides):
    """The fields `jaxformer.training.optim.make_optimizer` reads, without ml_collections."""
    fields = dict(OPT, lr_schedule="constant", warmup_steps=0, num_train_steps=1, min_lr_ratio=0.0,
                  decay_embeddings=True, grad_clip_norm=0.0, reduce_on_plateau=False,
                  freeze_backbone=False, backbone_lr_multiplier=1.0, head_only_steps=0,
                  eval_every_steps=1)
    fields.update(overrides)
    return types.SimpleNamespace(**fields)


class JaxformerPeer:
    """jaxformer DecoderLM + make_optimizer + make_train_step, one jitted step per call."""
    name = "jaxformer"
    kind = "train"
    jit_on_first_call = False

    def __init__(self, cfg: dict, seed: int = 0, **model_overrides):
        self.cfg, self.seed = dict(cfg), seed
        self.model_overrides = model_overrides
        self.tokens_per_step = cfg["batch"] * cfg["block_size"]
        self.n_params_counted = None
        self.info = {}

    def setup(self):
        import jax
        import jax.numpy as jnp
        from flax import linen as nn

        import jaxformer
        from jaxformer.models import DecoderLM, count_params
        from jaxformer.training.optim import make_optimizer
        from jaxformer.training.steps import make_train_step

        self.model_cfg = model_config(self.cfg, **self.model_overrides)
        model = DecoderLM(self.model_cfg)
        x0 = jnp.zeros((1, self.cfg["block_size"]), jnp.int32)
        init_key, dropout_key = jax.random.split(jax.random.key(self.seed))
        params = nn.unbox(jax.jit(lambda k: model.init(k, x0)["params"])(init_key))
        tx = make_optimizer(optimizer_config(), params)
        self.state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
                      "rng": dropout_key}
        self.n_params_counted = count_params(params)
        # Donating the state lets XLA update parameters and moments in place (no second copy).
        self._train_step = jax.jit(make_train_step(model, tx, task="lm"), donate_argnums=(0,))
        self.data = [{"inputs": jnp.asarray(b[:, :-1]), "targets": jnp.asarray(b[:, 1:]),
                      "weights": jnp.ones(b[:, 1:].shape, jnp.float32)} for b in synthetic_batches(self.cfg)]
        jax.block_until_ready((self.state, self.data))
        self.compiled = None
        self.i = 0
        self.info = dict(lib=f"jaxformer {jaxformer.__version__} DecoderLM + make_train_step",
                         jax=jax.__version__, device=str(jax.devices()[0]),
                         XLA_FLAGS=os.environ.get("XLA_FLAGS", ""),
                         model={k: v for k, v in self.model_cfg.to_dict().items()
                                if k in ("scan_layers", "remat", "attention_impl", "attention_dropout_rate")})

    def compile(self) -> float:
        """Ahead-of-time trace + XLA compile of the train step, in seconds."""
        t0 = time.perf_counter()
        lowered = self._train_step.lower(self.state, self.data[0])
        t1 = time.perf_counter()
        self.compiled = lowered.compile()
        t2 = time.perf_counter()
        self.info.update(trace_lower_s=round(t1 - t0, 3), xla_compile_s=round(t2 - t1, 3))
        return t2 - t0

    def step(self) -> float:
        batch = self.data[self.i % len(self.data)]
        self.i += 1
        fn = self.compiled or self._train_step
        self.state, metrics = fn(self.state, batch)
        loss = float(metrics["loss_sum"] / metrics["weight_sum"])
        import jax
        jax.block_until_ready(self.state)  # as peers_bench's JAX peers: the update is done
        return loss


def make_peer(cfg: dict, seed: int = 0, **model_overrides) -> JaxformerPeer:
    """peers_bench's factory: `--extra bench.jaxformer_peer:make_peer`."""
    return JaxformerPeer(cfg, seed, **model_overrides)
