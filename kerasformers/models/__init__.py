"""Model builders and `build_transformer_model` (bert4keras' `bert4keras.models`)."""

import inspect
import os

from kerasformers.models.albert import ALBERT, ALBERT_Unshared
from kerasformers.models.bert import BERT, RoBERTa
from kerasformers.models.config import load_config, translate_config, validate_config
from kerasformers.models.electra import ELECTRA
from kerasformers.models.gemma import Gemma
from kerasformers.models.gpt import GPT, GPT2, GPT2_ML
from kerasformers.models.llama import LLaMA, Mistral
from kerasformers.models.masks import (
    APPLICATIONS,
    AttentionBias,
    adds_mlm_head,
    atrous_mask,
    check_application,
    extend_with_language_model,
    extend_with_unified_language_model,
    lm_mask,
    local_mask,
    sparse_mask,
    unilm_mask,
)
from kerasformers.models.nezha import NEZHA
from kerasformers.models.qwen import Qwen2, Qwen3
from kerasformers.models.roformer import RoFormer, RoFormerV2
from kerasformers.models.t5 import T5, T5_MODELS, T5_Base, T5_Decoder, T5_Encoder
from kerasformers.models.transformer import Transformer
from kerasformers.models.weights import FusedPart, WeightLoadingError

# model= name -> builder class. Later families register here.
MODELS = {
    "bert": BERT,
    "roberta": RoBERTa,
    "albert": ALBERT,
    "albert_unshared": ALBERT_Unshared,
    "nezha": NEZHA,
    "electra": ELECTRA,
    "roformer": RoFormer,
    "roformer_v2": RoFormerV2,
    "gpt": GPT,
    "gpt2": GPT2,
    "gpt2_ml": GPT2_ML,
    # t5, t5.1.0, t5.1.1, mt5.1.1, each also with _encoder / _decoder
    **T5_MODELS,
    "llama": LLaMA,
    "qwen2": Qwen2,
    "qwen3": Qwen3,
    "mistral": Mistral,
    "gemma": Gemma,
}

# HF config.json model_type -> our model= name, for model="auto" (T5 picks its
# version from feed_forward_proj).
HF_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "albert": "albert",
    "electra": "electra",
    "roformer": "roformer",
    "nezha": "nezha",
    "openai-gpt": "gpt",
    "gpt2": "gpt2",
    "t5": "t5.1.0",
    "mt5": "mt5.1.1",
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "mistral": "mistral",
    "gemma": "gemma",
}
# Families read only from configs of their own model_type; the BERT-format
# families share Google's keys (bert_config.json has no model_type) and may
# read one another's.
_DECODER_FAMILIES = {
    "gpt": GPT,
    "gpt2": GPT2,
    "llama": LLaMA,
    "qwen2": Qwen2,
    "qwen3": Qwen3,
    "mistral": Mistral,
    "gemma": Gemma,
}


def _auto_model(config, config_path):
    """model="auto": the family named by the config's model_type."""
    model_type = config.get("model_type")
    where = os.fspath(config_path) if isinstance(config_path, (str, os.PathLike)) else "config"
    if model_type is None:
        raise ValueError(
            f'model="auto" needs a "model_type" key in {where} (an HF config.json); pass '
            f"model= one of {sorted(MODELS)}"
        )
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(
            f'model="auto": {where} has model_type {model_type!r}, which no family here '
            f"reads; known: {sorted(HF_MODEL_TYPES)}"
        )
    name = HF_MODEL_TYPES[model_type]
    if model_type == "t5" and str(config.get("feed_forward_proj", "relu")).startswith("gated"):
        name = "t5.1.1"
    return name


def config_file_names():
    """The config files a checkpoint folder may hold, in the order they are
    looked for: HF's config.json, then the Google names the families write
    (bert_config.json, albert_config.json, t5_config.json)."""
    names = ["config.json"]
    for cls in MODELS.values():
        if cls.google_config_file not in names:
            names.append(cls.google_config_file)
    return names


def find_config_file(directory):
    """The first of `config_file_names()` present in `directory`, or None."""
    for name in config_file_names():
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def _check_model_type(cls, config, config_path):
    """A config whose model_type names another decoder family than `cls` is an error."""
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        return
    family = HF_MODEL_TYPES[model_type]
    decoder = _DECODER_FAMILIES.get(family)
    own = next((n for n, c in _DECODER_FAMILIES.items() if c is cls), None)
    # A user's own subclass of a family reads that family's configs.
    custom = cls not in MODELS.values() and decoder is not None and issubclass(cls, decoder)
    if (decoder is not None or own is not None) and decoder is not cls and not custom:
        where = os.fspath(config_path) if isinstance(config_path, (str, os.PathLike)) else "config"
        raise ValueError(
            f"{where} has model_type {model_type!r} (model={family!r}) but "
            f"model={own or cls.__name__!r} was asked for; pass model={family!r} or "
            'model="auto"'
        )


def _accepted_arguments(cls):
    """Named parameters of every __init__ along the builder's class hierarchy."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters.values()
            names.update(p.name for p in params if p.kind in kinds and p.name != "self")
    return names


def build_transformer_model(
    config_path=None,
    checkpoint_path=None,
    model="bert",
    application="encoder",
    return_keras_model=True,
    **kwargs,
):
    """Builds a Transformer from a config and optionally loads a checkpoint.

    Args:
        config_path: Google `bert_config.json`, HF `config.json`, or a dict.
        checkpoint_path: Google TF checkpoint prefix, *.safetensors,
            pytorch_model.bin, a Keras *.weights.h5, or a directory holding one.
        model: family name or a `Transformer` subclass; one of `MODELS`, or
            "auto" for the family the config's HF `model_type` names.
        application: the attention mask of every layer: "encoder" (none), "lm"
            (causal; turns on the MLM head as bert4keras did), "unilm" (UniLM's
            seq2seq mask from the segment ids; also turns on the MLM head), or a
            callable `fn(inputs) -> additive bias` (see
            `kerasformers.models.masks`). The gpt* models are always "lm" (or
            "unilm" for gpt, which has segments).
        return_keras_model: return the keras.Model (default) or the builder.
        **kwargs: builder arguments overriding the config (with_pool, with_mlm,
            keep_tokens, segment_vocab_size, dropout_rate, ...).

    Returns:
        A functional keras.Model, or the builder when return_keras_model=False.

    Example:
        >>> model = build_transformer_model("bert_config.json", "bert_model.ckpt",
        ...                                 with_mlm=True)
    """
    raw_config = load_config(config_path)
    if isinstance(model, str) and model.lower() == "auto":
        model = _auto_model(raw_config, config_path)
    if isinstance(model, str):
        key = model.lower()
        if key not in MODELS:
            raise ValueError(f"unknown model {model!r}; available: {sorted(MODELS)}")
        cls = MODELS[key]
    elif isinstance(model, type) and issubclass(model, Transformer):
        cls = model
    else:
        raise TypeError(f"model must be a name or a Transformer subclass, got {model!r}")
    _check_model_type(cls, raw_config, config_path)
    application = check_application(application)

    accepted = _accepted_arguments(cls)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"build_transformer_model got unknown argument(s) {unknown} for model "
            f"{cls.__name__}; accepted: {sorted(accepted)}"
        )
    # Keys of the config file the builder does not take (pooler_* of the Chinese
    # release, HF's architectures, ...) are ignored, as bert4keras did.
    configs = {k: v for k, v in translate_config(raw_config).items() if k in accepted}
    configs.pop("application", None)  # chosen by the caller, never by a config file
    configs.update(kwargs)
    if application in ("lm", "unilm") and adds_mlm_head(cls):
        configs["with_mlm"] = configs.get("with_mlm") or True
    configs["application"] = application
    validate_config(
        configs,
        builder=cls,
        config=raw_config,
        config_name="config" if isinstance(config_path, dict) else os.fspath(config_path or ""),
        explicit=kwargs,
    )
    try:
        transformer = cls(**configs)
    except TypeError as err:
        raise TypeError(f"cannot build {cls.__name__} from this config: {err}") from err
    # With a checkpoint coming, skip the (overwritten) random initialisation.
    transformer.defer_initialization = checkpoint_path is not None
    transformer.build()
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer.model if return_keras_model else transformer


__all__ = [
    "ALBERT",
    "ALBERT_Unshared",
    "APPLICATIONS",
    "AttentionBias",
    "BERT",
    "ELECTRA",
    "FusedPart",
    "GPT",
    "GPT2",
    "GPT2_ML",
    "Gemma",
    "HF_MODEL_TYPES",
    "config_file_names",
    "find_config_file",
    "LLaMA",
    "Mistral",
    "NEZHA",
    "Qwen2",
    "Qwen3",
    "RoFormer",
    "RoFormerV2",
    "MODELS",
    "RoBERTa",
    "T5",
    "T5_Base",
    "T5_Decoder",
    "T5_Encoder",
    "Transformer",
    "WeightLoadingError",
    "atrous_mask",
    "build_transformer_model",
    "extend_with_language_model",
    "extend_with_unified_language_model",
    "lm_mask",
    "local_mask",
    "sparse_mask",
    "unilm_mask",
]
