"""Model behaviour: shapes, causality, padding, dropout, scan/loop/remat equivalence, heads.

Speed: XLA compiles random-number code slowly on CPU, so tests fill parameters with numpy
(`random_params`, shapes from jax.eval_shape) and jit each (model, options) once (`jitted`).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import ModelConfig
from jaxformer.model import loop_to_scan, scan_to_loop
from jaxformer.models import Classifier, DecoderLM, EncoderDecoder

KEY = jax.random.key(0)


def tiny(**kw):
    base = dict(vocab_size=32, d_model=16, num_heads=4, num_layers=2, num_encoder_layers=2,
                num_decoder_layers=2, max_len=16, dropout_rate=0.1)
    return ModelConfig(**{**base, **kw})


def tokens(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).integers(1, 32, shape), jnp.int32)


def random_params(model, *args, seed=0):
    """Params with the model's tree and shapes: N(0, 0.1) entries, LayerNorm scales around 1."""
    abstract = nn.unbox(jax.eval_shape(model.init, KEY, *args)["params"])
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        x = rng.normal(0.0, 0.1, leaf.shape) + (1.0 if path[-1].key == "scale" else 0.0)
        return jnp.asarray(x, leaf.dtype)
    return jax.tree_util.tree_map_with_path(fill, abstract)


@functools.cache
def jitted(model, **static):
    """jit(model.apply) with static keyword options, compiled once per (model, options)."""
    return jax.jit(functools.partial(model.apply, **static))


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol)


def differ(a, b, by=1e-4):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) > by


# ----- shapes -----

@pytest.mark.parametrize("scan", [True, False])
def test_output_shapes_and_dtypes(scan):
    cfg = tiny(scan_layers=scan, dtype="bfloat16")
    x, y = tokens((2, 8)), tokens((2, 5), seed=2)
    lm = DecoderLM(cfg)
    v = nn.unbox(jax.jit(lm.init)(KEY, x))       # the real initialiser, once
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))  # param_dtype stays float32
    layers = v["params"]["backbone"]["layers"]
    kernel = layers["layer"]["self_attention"]["query"]["kernel"] if scan else layers["layer_0"]["self_attention"]["query"]["kernel"]
    assert kernel.shape == ((2, 16, 4, 4) if scan else (16, 4, 4))  # [layers?, embed, heads, head_dim]
    out = jitted(lm)(v, x)
    assert out.shape == (2, 8, 32) and out.dtype == jnp.float32
    ed = EncoderDecoder(cfg)
    out = jitted(ed)({"params": random_params(ed, x, y)}, x, y)
    assert out.shape == (2, 5, 32) and out.dtype == jnp.float32
    clf = Classifier(cfg, num_classes=3, pooling="last")
    out = jitted(clf)({"params": random_params(clf, x)}, x)
    assert out.shape == (2, 3) and out.dtype == jnp.float32


# ----- causality and padding -----

@pytest.mark.parametrize("position", ["learned", "rope"])
def test_decoder_lm_is_causal(position):
    lm = DecoderLM(tiny(position=position))
    x = tokens((2, 10))
    v = {"params": random_params(lm, x)}
    base = jitted(lm)(v, x)
    for j in (0, 4, 9):
        changed = jitted(lm)(v, x.at[:, j].set((x[:, j] % 31) + 1))
        close(changed[:, :j], base[:, :j])
        assert differ(changed[:, j], base[:, j])   # position j itself does change


def test_encoder_decoder_target_is_causal():
    ed = EncoderDecoder(tiny())
    src, tgt = tokens((2, 7)), tokens((2, 6), seed=3)
    v = {"params": random_params(ed, src, tgt)}
    base = jitted(ed)(v, src, tgt)
    changed = jitted(ed)(v, src, tgt.at[:, 3].set((tgt[:, 3] % 31) + 1))
    close(changed[:, :3], base[:, :3])
    assert differ(changed[:, 3:], base[:, 3:])


def test_padding_never_changes_real_positions():
    cfg = tiny()
    src = tokens((2, 6)).at[1, 4:].set(0)           # second row already has padding
    src_padded = jnp.pad(src, ((0, 0), (0, 5)))     # 5 more pads at the end
    tgt = tokens((2, 5), seed=3)
    ed = EncoderDecoder(cfg)
    v = {"params": random_params(ed, src, tgt)}
    encode = jitted(ed, method=EncoderDecoder.encode)
    enc, enc_padded = encode(v, src), encode(v, src_padded)
    close(enc_padded[0, :6], enc[0, :6])            # encoder self-attention ignores pads
    close(enc_padded[1, :4], enc[1, :4])
    close(jitted(ed)(v, src_padded, tgt), jitted(ed)(v, src, tgt))   # cross-attention ignores pads
    # The masks really act: the same extra positions holding real ids do change the output.
    assert differ(jitted(ed)(v, src_padded.at[:, 6:].set(5), tgt), jitted(ed)(v, src, tgt))

    x = tokens((2, 6))
    x_padded = jnp.pad(x, ((0, 0), (0, 4)))
    lm = DecoderLM(cfg)
    v = {"params": random_params(lm, x)}
    close(jitted(lm)(v, x_padded)[:, :6], jitted(lm)(v, x))
    for backbone, pooling in (("decoder", "last"), ("encoder", "mean")):
        clf = Classifier(cfg, num_classes=3, pooling=pooling, backbone_kind=backbone)
        v = {"params": random_params(clf, x)}
        close(jitted(clf)(v, x_padded), jitted(clf)(v, x))
        assert differ(jitted(clf)(v, x_padded.at[:, 7].set(3)), jitted(clf)(v, x))


# ----- dropout -----

@pytest.mark.parametrize("attention_dropout", [0.0, 0.2])
def test_dropout_is_driven_only_by_the_dropout_key(attention_dropout):
    cfg = tiny(dropout_rate=0.2, attention_dropout_rate=attention_dropout)
    lm = DecoderLM(cfg)
    x = tokens((2, 8))
    v = {"params": random_params(lm, x)}
    run = jitted(lm, deterministic=False)
    a, b, c = (run(v, x, rngs={"dropout": jax.random.key(s)}) for s in (1, 1, 2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))       # same key: bit-identical
    assert differ(a, c, 1e-3)                                          # different key: different masks
    det = jitted(lm)(v, x)
    assert differ(a, det, 1e-3)                                        # dropout really was on
    no_dropout = DecoderLM(cfg.replace(dropout_rate=0.0, attention_dropout_rate=0.0))
    close(det, jitted(no_dropout, deterministic=False)(v, x, rngs={"dropout": jax.random.key(1)}))
    if attention_dropout:   # attention dropout alone also obeys the key
        only_attn = DecoderLM(cfg.replace(dropout_rate=0.0))
        run = jitted(only_attn, deterministic=False)
        assert differ(run(v, x, rngs={"dropout": jax.random.key(1)}), run(v, x, rngs={"dropout": jax.random.key(2)}))


def test_dropout_in_encoder_decoder_and_classifier():
    cfg, off = tiny(dropout_rate=0.3), tiny(dropout_rate=0.0)
    x, y = tokens((2, 6)), tokens((2, 5), seed=2)
    for make, args in ((EncoderDecoder, (x, y)), (lambda c: Classifier(c, num_classes=3), (x,))):
        model = make(cfg)
        v = {"params": random_params(model, *args)}
        run = jitted(model, deterministic=False)
        assert differ(run(v, *args, rngs={"dropout": jax.random.key(1)}), run(v, *args, rngs={"dropout": jax.random.key(2)}))
        close(jitted(model)(v, *args), jitted(make(off), deterministic=False)(v, *args, rngs={"dropout": jax.random.key(1)}))


# ----- scan vs loop vs remat -----

@functools.cache
def loss_and_grads(model):
    def loss(params, *args):
        logits = model.apply({"params": params}, *args)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 1])
    return jax.jit(jax.value_and_grad(loss))


@pytest.mark.parametrize("kind", ["decoder", "encoder_decoder"])
def test_scan_and_loop_give_identical_outputs_and_grads(kind):
    cfg = tiny(activation="swiglu", position="rope")
    x, y = tokens((2, 8)), tokens((2, 5), seed=2)
    model_cls = DecoderLM if kind == "decoder" else EncoderDecoder
    args = (x,) if kind == "decoder" else (x, y)
    scanned, looped = model_cls(cfg), model_cls(cfg.replace(scan_layers=False))
    p_scan = random_params(scanned, *args)
    p_loop = scan_to_loop(p_scan)
    assert jax.tree.structure(p_loop) == jax.tree.structure(nn.unbox(jax.eval_shape(looped.init, KEY, *args)["params"]))
    jax.tree.map(np.testing.assert_array_equal, loop_to_scan(p_loop), p_scan)
    close(jitted(scanned)({"params": p_scan}, *args), jitted(looped)({"params": p_loop}, *args))
    loss_s, g_s = loss_and_grads(scanned)(p_scan, *args)
    loss_l, g_l = loss_and_grads(looped)(p_loop, *args)
    close(loss_s, loss_l)
    jax.tree.map(close, scan_to_loop(g_s), g_l)


@pytest.mark.parametrize("remat,scan", [("full", True), ("dots", True), ("full", False)])
def test_remat_changes_neither_values_nor_grads(remat, scan):
    cfg = tiny(scan_layers=scan)
    x = tokens((2, 8))
    plain = DecoderLM(cfg)
    p = random_params(plain, x)
    loss_a, g_a = loss_and_grads(plain)(p, x)
    loss_b, g_b = loss_and_grads(DecoderLM(cfg.replace(remat=remat)))(p, x)
    close(loss_a, loss_b)
    jax.tree.map(close, g_a, g_b)
    assert float(jnp.abs(g_a["backbone"]["token_embed"]["embedding"]).max()) > 0  # grads are not trivially 0


# ----- heads: masking and attention maps -----

@pytest.mark.parametrize("scan", [True, False])
def test_head_mask_zero_for_a_layer_removes_its_attention(scan):
    lm = DecoderLM(tiny(scan_layers=scan, norm="post"))
    x = tokens((2, 8))
    p = random_params(lm, x)      # non-zero biases: removing the sublayer != zeroing its kernel
    mask = jnp.ones((2, 4)).at[1].set(0.0)
    masked = jitted(lm)({"params": p}, x, head_mask=mask)
    p_loop = scan_to_loop(p) if scan else jax.tree.map(lambda a: a, p)
    out = p_loop["backbone"]["layers"]["layer_1"]["self_attention"]["out"]
    out["kernel"], out["bias"] = jnp.zeros_like(out["kernel"]), jnp.zeros_like(out["bias"])
    removed = loop_to_scan(p_loop) if scan else p_loop
    close(masked, jitted(lm)({"params": removed}, x))
    unmasked = jitted(lm)({"params": p}, x)
    close(jitted(lm)({"params": p}, x, head_mask=jnp.ones((2, 4))), unmasked)
    assert differ(jitted(lm)({"params": p}, x, head_mask=jnp.ones((2, 4)).at[0, 2].set(0.0)), unmasked)


@pytest.mark.parametrize("scan", [True, False])
def test_attention_weights_capture(scan):
    cfg = tiny(scan_layers=scan, attention_impl="einsum", position="rope")
    lm = DecoderLM(cfg)
    x = tokens((2, 8))
    v = {"params": random_params(lm, x)}
    logits, state = jitted(lm, mutable=("intermediates",))(v, x)
    close(logits, jitted(DecoderLM(cfg.replace(attention_impl="xla")))(v, x))   # capture changes nothing
    maps = jax.tree.leaves(state["intermediates"])   # scan: one [layers, ...] array; loop: one per layer
    probs = np.asarray(maps[0]) if scan else np.stack([np.asarray(m) for m in maps])
    assert probs.shape == (2, 2, 4, 8, 8)                                        # [layers, B, H, Lq, Lk]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    upper = np.triu(np.ones((8, 8), bool), k=1)
    assert np.all(probs[..., upper] == 0.0) and np.all(probs[..., ~upper] > 0.0)

    ed = EncoderDecoder(cfg)
    src = tokens((2, 6)).at[0, 4:].set(0)
    v = {"params": random_params(ed, src, x)}
    _, state = jitted(ed, mutable=("intermediates",))(v, src, x)
    layers = state["intermediates"]["decoder"]["layers"]
    cross = np.asarray(jax.tree.leaves(layers["layer" if scan else "layer_0"]["cross_attention"])[0])
    assert np.all(cross[..., 0, :, :, 4:] == 0.0) and np.all(cross[..., 1, :, :, :] > 0.0)  # padded keys get none
