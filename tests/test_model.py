"""Model behaviour: shapes, causality, padding, dropout, scan/loop/remat equivalence, heads."""
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


def tokens(shape, seed=1, low=1):
    return jax.random.randint(jax.random.key(seed), shape, low, 32, dtype=jnp.int32)


def init(model, *args, **kw):
    return nn.unbox(model.init(KEY, *args, **kw))


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol)


# ----- shapes -----

@pytest.mark.parametrize("scan", [True, False])
def test_output_shapes_and_dtypes(scan):
    cfg = tiny(scan_layers=scan, dtype="bfloat16")
    x, y = tokens((2, 8)), tokens((2, 5), seed=2)
    lm = DecoderLM(cfg)
    v = init(lm, x)
    out = lm.apply(v, x)
    assert out.shape == (2, 8, 32) and out.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))  # param_dtype stays float32
    layer_kernel = v["params"]["backbone"]["layers"]["layer" if scan else "layer_0"]["self_attention"]["query"]["kernel"]
    assert layer_kernel.shape == ((2, 16, 4, 4) if scan else (16, 4, 4))   # [layers?, embed, heads, head_dim]
    ed = EncoderDecoder(cfg)
    out = ed.apply(init(ed, x, y), x, y)
    assert out.shape == (2, 5, 32) and out.dtype == jnp.float32
    for pooling in ("mean", "last"):
        clf = Classifier(cfg, num_classes=3, pooling=pooling)
        out = clf.apply(init(clf, x), x)
        assert out.shape == (2, 3) and out.dtype == jnp.float32


# ----- causality and padding -----

@pytest.mark.parametrize("position", ["learned", "rope"])
def test_decoder_lm_is_causal(position):
    cfg = tiny(position=position)
    lm = DecoderLM(cfg)
    x = tokens((2, 10))
    v = init(lm, x)
    base = lm.apply(v, x)
    for j in (0, 4, 9):
        changed = lm.apply(v, x.at[:, j].set((x[:, j] % 31) + 1))
        close(changed[:, :j], base[:, :j])
        assert np.abs(np.asarray(changed[:, j] - base[:, j])).max() > 1e-4  # position j itself does change


def test_encoder_decoder_target_is_causal():
    ed = EncoderDecoder(tiny())
    src, tgt = tokens((2, 7)), tokens((2, 6), seed=3)
    v = init(ed, src, tgt)
    base = ed.apply(v, src, tgt)
    changed = ed.apply(v, src, tgt.at[:, 3].set((tgt[:, 3] % 31) + 1))
    close(changed[:, :3], base[:, :3])
    assert np.abs(np.asarray(changed[:, 3:] - base[:, 3:])).max() > 1e-4


def test_padding_never_changes_real_positions():
    cfg = tiny()
    src = tokens((2, 6)).at[1, 4:].set(0)           # second row already has padding
    src_padded = jnp.pad(src, ((0, 0), (0, 5)))     # 5 more pads at the end
    tgt = tokens((2, 5), seed=3)
    ed = EncoderDecoder(cfg)
    v = init(ed, src, tgt)
    enc = ed.apply(v, src, method=EncoderDecoder.encode)
    enc_padded = ed.apply(v, src_padded, method=EncoderDecoder.encode)
    close(enc_padded[0, :6], enc[0, :6])            # encoder self-attention ignores pads
    close(enc_padded[1, :4], enc[1, :4])
    close(ed.apply(v, src_padded, tgt), ed.apply(v, src, tgt))   # cross-attention ignores pads
    # The masks really act: the same extra tokens as real (non-pad) ids do change the output.
    src_real = src_padded.at[:, 6:].set(5)
    assert np.abs(np.asarray(ed.apply(v, src_real, tgt) - ed.apply(v, src, tgt))).max() > 1e-4

    x = tokens((2, 6))
    lm = DecoderLM(cfg)
    v = init(lm, x)
    close(lm.apply(v, jnp.pad(x, ((0, 0), (0, 4))))[:, :6], lm.apply(v, x))
    for backbone in ("decoder", "encoder"):
        for pooling in ("mean", "last"):
            clf = Classifier(cfg, num_classes=3, pooling=pooling, backbone_kind=backbone)
            v = init(clf, x)
            close(clf.apply(v, jnp.pad(x, ((0, 0), (0, 4)))), clf.apply(v, x))


def test_classifier_pooling_uses_only_real_tokens():
    cfg = tiny()
    x = tokens((2, 6)).at[:, 4:].set(0)
    clf_last = Classifier(cfg, num_classes=3, pooling="last")
    v = init(clf_last, x)
    # With a causal backbone, 'last' sees tokens 0..3 only; changing a pad-position token to a
    # real token at position 5 would move the pooled position, so compare against truncation.
    close(clf_last.apply(v, x), clf_last.apply(v, x[:, :4]))


# ----- dropout -----

@pytest.mark.parametrize("attention_dropout", [0.0, 0.2])
def test_dropout_is_driven_only_by_the_dropout_key(attention_dropout):
    cfg = tiny(dropout_rate=0.2, attention_dropout_rate=attention_dropout)
    lm = DecoderLM(cfg)
    x = tokens((2, 8))
    v = init(lm, x)
    run = jax.jit(lambda k: lm.apply(v, x, deterministic=False, rngs={"dropout": k}))
    a, b, c = run(jax.random.key(1)), run(jax.random.key(1)), run(jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))       # same key: bit-identical
    assert np.abs(np.asarray(a - c)).max() > 1e-3                      # different key: different masks
    det = lm.apply(v, x, deterministic=True)
    assert np.abs(np.asarray(a - det)).max() > 1e-3                    # dropout really was on
    no_dropout = DecoderLM(cfg.replace(dropout_rate=0.0, attention_dropout_rate=0.0))
    close(det, no_dropout.apply(v, x, deterministic=False, rngs={"dropout": jax.random.key(1)}))


def test_dropout_in_encoder_decoder_and_classifier():
    cfg, off = tiny(dropout_rate=0.3), tiny(dropout_rate=0.0)
    x, y = tokens((2, 6)), tokens((2, 5), seed=2)
    for make, args in ((EncoderDecoder, (x, y)), (lambda c: Classifier(c, num_classes=3), (x,))):
        model = make(cfg)
        v = init(model, *args)
        a = model.apply(v, *args, deterministic=False, rngs={"dropout": jax.random.key(1)})
        b = model.apply(v, *args, deterministic=False, rngs={"dropout": jax.random.key(2)})
        assert np.abs(np.asarray(a - b)).max() > 1e-4
        close(model.apply(v, *args), make(off).apply(v, *args, deterministic=False,
                                                     rngs={"dropout": jax.random.key(1)}))


# ----- scan vs loop vs remat -----

def _loss_and_grads(model, params, *args):
    def loss(p):
        logits = model.apply({"params": p}, *args)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 1])
    return jax.value_and_grad(loss)(params)


@pytest.mark.parametrize("kind", ["decoder", "encoder_decoder"])
def test_scan_and_loop_give_identical_outputs_and_grads(kind):
    cfg = tiny(activation="swiglu", position="rope")
    x, y = tokens((2, 8)), tokens((2, 5), seed=2)
    make = (lambda c: DecoderLM(c)) if kind == "decoder" else (lambda c: EncoderDecoder(c))
    args = (x,) if kind == "decoder" else (x, y)
    scanned, looped = make(cfg), make(cfg.replace(scan_layers=False))
    p_scan = init(scanned, *args)["params"]
    p_loop = scan_to_loop(p_scan)
    assert jax.tree.structure(p_loop) == jax.tree.structure(init(looped, *args)["params"])
    loss_s, g_s = _loss_and_grads(scanned, p_scan, *args)
    loss_l, g_l = _loss_and_grads(looped, p_loop, *args)
    close(loss_s, loss_l)
    close(scanned.apply({"params": p_scan}, *args), looped.apply({"params": p_loop}, *args))
    jax.tree.map(close, scan_to_loop(g_s), g_l)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), loop_to_scan(p_loop), p_scan)


@pytest.mark.parametrize("remat,scan", [("full", True), ("dots", True), ("full", False)])
def test_remat_changes_neither_values_nor_grads(remat, scan):
    cfg = tiny(scan_layers=scan)
    x = tokens((2, 8))
    plain = DecoderLM(cfg)
    p = init(plain, x)["params"]
    loss_a, g_a = _loss_and_grads(plain, p, x)
    loss_b, g_b = _loss_and_grads(DecoderLM(cfg.replace(remat=remat)), p, x)
    close(loss_a, loss_b)
    jax.tree.map(close, g_a, g_b)
    assert float(jnp.abs(g_a["backbone"]["token_embed"]["embedding"]).max()) > 0  # grads are not trivially 0


# ----- heads: masking and attention maps -----

@pytest.mark.parametrize("scan", [True, False])
def test_head_mask_zero_for_a_layer_removes_its_attention(scan):
    cfg = tiny(scan_layers=scan, norm="post")
    lm = DecoderLM(cfg)
    x = tokens((2, 8))
    p = init(lm, x)["params"]
    # Random non-zero biases so "removing the sublayer" is not the same as "zeroing the kernel".
    p = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(a.size), a.shape), p)
    mask = jnp.ones((2, 4)).at[1].set(0.0)
    masked = lm.apply({"params": p}, x, head_mask=mask)
    p_loop = scan_to_loop(p) if scan else p
    out = p_loop["backbone"]["layers"]["layer_1"]["self_attention"]["out"]
    out["kernel"], out["bias"] = jnp.zeros_like(out["kernel"]), jnp.zeros_like(out["bias"])
    removed_params = loop_to_scan(p_loop) if scan else p_loop
    close(masked, lm.apply({"params": removed_params}, x))
    close(lm.apply({"params": p}, x, head_mask=jnp.ones((2, 4))), lm.apply({"params": p}, x))
    one_head = lm.apply({"params": p}, x, head_mask=jnp.ones((2, 4)).at[0, 2].set(0.0))
    assert np.abs(np.asarray(one_head - lm.apply({"params": p}, x))).max() > 1e-4


@pytest.mark.parametrize("scan", [True, False])
def test_attention_weights_capture(scan):
    cfg = tiny(scan_layers=scan, attention_impl="einsum", position="rope")
    lm = DecoderLM(cfg)
    x = tokens((2, 8))
    v = init(lm, x)
    logits, state = lm.apply(v, x, mutable=["intermediates"])
    close(logits, DecoderLM(cfg.replace(attention_impl="xla")).apply(v, x))   # capture changes nothing
    maps = jax.tree.leaves(state["intermediates"])   # scan: one [layers, ...] array; loop: one per layer
    probs = np.asarray(maps[0]) if scan else np.stack([np.asarray(m) for m in maps])
    assert probs.shape == (2, 2, 4, 8, 8)                                        # [layers, B, H, Lq, Lk]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    upper = np.triu(np.ones((8, 8), bool), k=1)
    assert np.all(probs[..., upper] == 0.0)
    assert np.all(probs[..., ~upper] > 0.0)

    ed = EncoderDecoder(cfg)
    src = tokens((2, 6)).at[0, 4:].set(0)
    v = init(ed, src, x)
    _, state = ed.apply(v, src, x, mutable=["intermediates"])
    cross = state["intermediates"]["decoder"]["layers"]
    cross = jax.tree.leaves(cross["layer"]["cross_attention"] if scan else cross["layer_0"]["cross_attention"])[0]
    assert np.all(np.asarray(cross)[..., 0, :, :, 4:] == 0.0)                  # padded source keys get no weight
