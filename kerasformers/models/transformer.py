"""The builder every model family subclasses: template methods and hooks.

A family overrides the template methods `get_inputs`, `apply_embeddings`,
`apply_main_layers`, `apply_final_layers`, `compute_attention_bias` and the
hooks they call (`norm_position`, `norm_arguments`, ...; docs/architecture.md
lists them), plus `variable_mapping` (Google checkpoint names) and
`hf_variable_mapping` (HF transformers names), whose engine lives in
`kerasformers.models.weights`. The template methods run once per pass over
symbolic inputs (`forward`); tensors of one pass (masks, position tables,
RealFormer scores) live on that pass's `PassState`, never on the builder.
"""

import json
import os

import keras
from keras import ops

from kerasformers.backend import recompute_enabled
from kerasformers.layers import LayerNormalization
from kerasformers.models.masks import AttentionBias, check_application
from kerasformers.models.weights import CheckpointMapping


class PassState:
    """The tensors one pass of the template methods shares between its layers."""

    def __init__(self):
        self.attention_bias = None  # the application's mask (AttentionBias output)
        self.token_mask = None  # (batch, len) real tokens of the pass
        self.position_ids = None  # the Input-Position tensor, if any
        self.position_bias = None  # relative / rotary position table, built once
        self.attention_scores = None  # RealFormer: logits of the previous layer
        self.context = None  # T5's decoder: the encoder output ...
        self.context_mask = None  # ... and its padding mask
        self.self_attention_bias = None  # T5's decoder: causal + position bias
        self.window_bias = None  # sliding-window layers' mask (Mistral, Qwen2)


class _PassValue:
    """A builder attribute that lives on the current pass's `PassState`, so that
    template methods keep bert4keras' spelling (`self.position_bias = ...`)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, builder, owner=None):
        if builder is None:
            return self
        state = builder.__dict__.get("state")
        return None if state is None else getattr(state, self.name)

    def __set__(self, builder, value):
        state = builder.__dict__.get("state")
        if state is None:
            raise AttributeError(
                f"{self.name} belongs to one pass of the template methods: set it while "
                "`forward` runs"
            )
        setattr(state, self.name, value)


class Transformer(CheckpointMapping):
    """Base builder: assembles a functional keras.Model from template methods.

    Args:
        vocab_size: token vocabulary size.
        hidden_size: model width.
        num_hidden_layers: number of Transformer blocks.
        num_attention_heads: attention heads per block.
        intermediate_size: feed-forward hidden width.
        hidden_act: feed-forward activation (name or callable, "gelu" is exact GELU).
        dropout_rate: dropout on embeddings and residual branches.
        attention_dropout_rate: dropout on attention probabilities.
        embedding_size: embedding width if it differs from hidden_size.
        attention_head_size: width of each head's values (default hidden/heads).
        attention_key_size: width of each head's queries/keys (default head size).
        sequence_length: fixed input length (None: variable).
        keep_tokens: original token ids to keep, in the new order (vocab pruning).
        compound_tokens: new tokens, each the (weighted) average of original ids.
        layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal initializer.
        pad_token_id: id whose positions are masked out of attention.
        ignore_invalid_weights: skip missing / mis-shaped tensors when loading
            instead of raising.
        prefix: prepended to every layer name (to hold two models in one graph).
        name: the keras.Model's name.
        recompute: gradient checkpointing of the attention, feed-forward and
            norm layers while training (less memory, one more forward); None
            reads the RECOMPUTE environment variable when the model is built.
        application: the attention mask shared by all layers: "encoder" (none),
            "lm" (causal), "unilm" (seq2seq from segment ids) or a callable
            `fn(inputs) -> additive bias` (see `kerasformers.models.masks`).
        dtype: dtype policy of every layer ("bfloat16", "mixed_bfloat16", ...);
            None: Keras' global policy (`keras.config.set_dtype_policy`).
    """

    # Where each sub-layer's norm sits: "post" (BERT: Norm(x + f(x))) or "pre"
    # (GPT-2, T5, LLaMA: x + f(Norm(x))).
    norm_position = "post"

    attention_bias = _PassValue()
    token_mask = _PassValue()
    position_ids = _PassValue()
    position_bias = _PassValue()
    attention_scores = _PassValue()
    context = _PassValue()
    context_mask = _PassValue()
    self_attention_bias = _PassValue()
    window_bias = _PassValue()

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        hidden_act,
        dropout_rate=None,
        attention_dropout_rate=None,
        embedding_size=None,
        attention_head_size=None,
        attention_key_size=None,
        sequence_length=None,
        keep_tokens=None,
        compound_tokens=None,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        pad_token_id=0,
        ignore_invalid_weights=False,
        prefix=None,
        name=None,
        recompute=None,
        application="encoder",
        dtype=None,
    ):
        if keep_tokens is not None:
            vocab_size = len(keep_tokens)
        if compound_tokens is not None:
            vocab_size += len(compound_tokens)
        if hidden_size % num_attention_heads and attention_head_size is None:
            raise ValueError(
                f"hidden_size {hidden_size} is not a multiple of num_attention_heads "
                f"{num_attention_heads}; pass attention_head_size explicitly"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.attention_head_size = attention_head_size or hidden_size // num_attention_heads
        self.attention_key_size = attention_key_size or self.attention_head_size
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.dropout_rate = dropout_rate or 0.0
        self.attention_dropout_rate = attention_dropout_rate or 0.0
        self.embedding_size = embedding_size or hidden_size
        self.sequence_length = sequence_length
        self.keep_tokens = keep_tokens
        self.compound_tokens = compound_tokens
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.pad_token_id = pad_token_id or 0
        self.ignore_invalid_weights = ignore_invalid_weights
        self.prefix = prefix or ""
        self.name = name
        self.recompute = recompute_enabled() if recompute is None else bool(recompute)
        self.application = check_application(application)
        self.dtype = keras.DTypePolicy(dtype).name if dtype is not None else None
        self.layers = {}
        self.state = None  # the PassState while `forward` runs
        self.defer_initialization = False
        self.built = False

    # ------------------------------------------------------------------ building
    def build(self, **kwargs):
        """Builds `self.model` from the template methods (once)."""
        if self.built:
            return self.model
        inputs = self.get_inputs()
        self.set_inputs(inputs)
        self.set_outputs(self.forward(inputs))
        self.model = keras.Model(self.inputs, self.output, name=self.name)
        # generation (and users) get from the model back to its template methods
        self.model._kf_builder = self
        self.built = True
        return self.model

    def forward(self, inputs):
        """One pass of the template methods over `inputs`, with a fresh `PassState`."""
        outer, self.state = self.state, PassState()
        try:
            self.attention_bias = self.compute_attention_bias(inputs)
            x = self.apply_embeddings(inputs)
            for index in range(self.num_hidden_layers):
                x = self.apply_main_layers(x, index)
            return self.apply_final_layers(x)
        finally:
            self.state = outer

    def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
        """Creates layer `kwargs["name"]` on first use (reusing it after) and calls it.

        Reuse by name is how the MLM head shares "Embedding-Token".
        """
        name = self.prefix + kwargs["name"]
        kwargs["name"] = name
        if name not in self.layers:
            if self.dtype is not None:
                kwargs.setdefault("dtype", self.dtype)
            self.layers[name] = layer(**kwargs)
            if getattr(self.layers[name].call, "supports_recompute", False):
                self.layers[name].recompute = self.recompute
        if inputs is None:
            return self.layers[name]
        return self.layers[name](inputs, **(arguments or {}))

    def set_inputs(self, inputs):
        self.inputs = inputs if isinstance(inputs, list) else [inputs]

    def set_outputs(self, outputs):
        self.outputs = outputs if isinstance(outputs, list) else [outputs]
        self.output = self.outputs[0] if len(self.outputs) == 1 else self.outputs

    @property
    def initializer(self):
        """Initializer of kernels and embeddings (bert4keras': truncated normal).

        While `defer_initialization` is set (the model is about to be filled from a
        checkpoint) it is zeros: random initialisation of a BERT-base costs seconds
        and a transient of several times the largest tensor, all overwritten.
        Whatever the checkpoint does not fill gets the real initializer afterwards.
        """
        if self.defer_initialization:
            return keras.initializers.Zeros()
        return keras.initializers.TruncatedNormal(stddev=self.initializer_range)

    def _initialize_unloaded(self, assigned):
        """Gives kernels/embeddings left out by a checkpoint their real initial values."""
        if not self.defer_initialization:
            return
        self.defer_initialization = False
        for layer in self.layers.values():
            for variable in layer.weights:
                if id(variable) not in assigned and variable.path.endswith(
                    ("kernel", "embeddings")
                ):
                    variable.assign(self.initializer(variable.shape, variable.dtype))

    # ------------------------------------------------------------------ configs
    # The name Google's releases give the file `google_config` writes.
    google_config_file = "bert_config.json"

    def config_arguments(self):
        """The arguments a config file records for this model, in our names: what
        `hf_config` and `google_config` spell in their keys (hook: families add
        their own)."""
        arguments = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "initializer_range": self.initializer_range,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "pad_token_id": self.pad_token_id,
        }
        if self.embedding_size != self.hidden_size:
            arguments["embedding_size"] = self.embedding_size
        if self.attention_head_size * self.num_attention_heads != self.hidden_size:
            arguments["attention_head_size"] = self.attention_head_size
        return arguments

    def hf_config(self):
        """Hook: the HF `config.json` dict of this model (families with an HF class)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no HF config writer (transformers has no class "
            "for it); save its weights with save_weights_as_checkpoint and write "
            "config.json yourself"
        )

    def google_config(self):
        """Hook: the Google-style config dict of this model, written as
        `google_config_file` (families with Google-named checkpoints)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no Google-style config writer (no Google "
            "checkpoint naming of its own)"
        )

    def save_pretrained(self, directory, dtype=None, **options):
        """Writes `directory` as transformers' `from_pretrained` reads it: config.json
        (`hf_config`) and the weights as HF-named safetensors.

        Args:
            directory: the folder (created if missing).
            dtype: cast floating weights, e.g. "bfloat16".
            **options: passed to `save_weights_as_checkpoint` (e.g. max_shard_size).

        Returns:
            The path of the weights written.
        """
        config = self.hf_config()
        os.makedirs(directory, exist_ok=True)
        if dtype is not None:
            config["torch_dtype"] = config["dtype"] = str(dtype)
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        return self.save_weights_as_checkpoint(
            os.path.join(directory, "model.safetensors"),
            format="safetensors",
            dtype=dtype,
            **options,
        )

    def get_inputs(self):
        raise NotImplementedError

    def apply_embeddings(self, inputs):
        raise NotImplementedError

    def apply_main_layers(self, inputs, index):
        raise NotImplementedError

    def apply_final_layers(self, inputs):
        raise NotImplementedError

    def compute_attention_bias(self, inputs=None):
        """Additive attention bias shared by all layers: the `application`'s mask.

        None for an encoder; otherwise the output of an `AttentionBias` layer
        ("Attention-LM-Mask", "Attention-UniLM-Mask" or "Attention-Mask" for a
        callable) computed from the model inputs.
        """
        if self.application == "encoder":
            return None
        inputs = inputs if isinstance(inputs, list) else [inputs]
        if self.application == "unilm":
            segment = self.prefix + "Input-Segment"
            if len(inputs) < 2 or getattr(inputs[1], "name", None) != segment:
                raise ValueError(
                    f"application='unilm' needs segment ids (the {segment!r} input) to tell "
                    f"source from target, but {type(self).__name__} has none here "
                    "(segment_vocab_size=0, or a model without segments)"
                )
        names = {"lm": "Attention-LM-Mask", "unilm": "Attention-UniLM-Mask"}
        return self.apply(
            inputs,
            AttentionBias,
            application=self.application,
            name=names.get(self.application, "Attention-Mask"),
        )

    def padding_mask(self, token_ids):
        """(batch, seq) mask of real tokens: positions holding `pad_token_id` are 0."""
        return ops.not_equal(token_ids, self.pad_token_id)

    def norm_arguments(self):
        """Keyword arguments of every LayerNormalization of the model (hook: RMS norms)."""
        return {"epsilon": self.layer_norm_epsilon}

    def apply_norm(self, x, name):
        """The model's norm layer `name` on `x`."""
        return self.apply(x, LayerNormalization, **self.norm_arguments(), name=name)

    def apply_residual(self, inputs, name, branch):
        """One sub-layer `name` with its residual connection, by `norm_position`.

        `branch(h)` builds the sub-layer (attention, feed-forward). "post":
        Norm(inputs + Dropout(branch(inputs))); "pre": inputs +
        Dropout(branch(Norm(inputs))). Layers: "<name>-Norm", "<name>-Dropout",
        "<name>-Add".
        """
        if self.norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {self.norm_position!r}")
        h = self.apply_norm(inputs, f"{name}-Norm") if self.norm_position == "pre" else inputs
        x = self.apply_residual_add(inputs, branch(h), name)
        return self.apply_norm(x, f"{name}-Norm") if self.norm_position == "post" else x

    def apply_residual_add(self, inputs, branch, name):
        """inputs + Dropout(branch): "<name>-Dropout", "<name>-Add"."""
        x = self.apply(branch, keras.layers.Dropout, rate=self.dropout_rate, name=f"{name}-Dropout")
        return self.apply([inputs, x], keras.layers.Add, name=f"{name}-Add")
