"""T5, T5.1.1 and mT5: encoder-decoder Transformers with bucketed relative positions.

Every block is pre-norm (x + Sublayer(RMSNorm(x))), bias-free, with unscaled
dot-product attention; each stack adds one learned relative position bias
(computed in its first layer, shared by all) and ends in an RMS norm.

- t5.1.0: ReLU feed-forward (wi, wo); the LM head is the shared token table,
  fed the decoder output scaled by hidden_size ** -0.5.
- t5.1.1 / mt5.1.1: gated-GELU feed-forward (gelu_new(wi_0 x) * wi_1 x, then
  wo) and a separate LM head; mT5 differs only in its Google checkpoint names.

Reference:
    T5: https://arxiv.org/abs/1910.10683
    T5.1.1: https://github.com/google-research/text-to-text-transfer-transformer/
        blob/main/released_checkpoints.md#t511
    mT5: https://arxiv.org/abs/2010.11934
"""

import keras
from keras import ops

from kerasformers.layers import (
    Embedding,
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
    OutputActivation,
    RelativePositionEmbeddingT5,
)
from kerasformers.models.config import export_config
from kerasformers.models.masks import AttentionBias, check_application
from kerasformers.models.naming import ATTENTION_DENSES, hf_linear, hf_norm
from kerasformers.models.t5_options import VERSIONS, check_version_options, hf_feed_forward_proj
from kerasformers.models.transformer import Transformer


class T5_Base(Transformer):
    """Options and checkpoint names shared by the T5 encoder, decoder and both.

    Args:
        version: "t5.1.0", "t5.1.1" or "mt5.1.1" (set by the model name).
        hidden_act: feed-forward activation; a pair such as ["gelu_new",
            "linear"] is the gated form (default from the version).
        feed_forward_proj: HF's spelling of it ("relu", "gated-gelu"); must
            agree with the version.
        tie_word_embeddings: HF option; False for t5.1.1 / mT5 (separate LM
            head), True for t5.1.0. Must agree with the version.
        scale_decoder_outputs: HF (>= 5) option, checked instead of
            tie_word_embeddings when given: True only for t5.1.0.
        relative_attention_num_buckets: buckets of the relative position bias.
        relative_attention_max_distance: distance from which the last bucket is used.
        num_decoder_layers: decoder depth (default num_hidden_layers).
        final_activation: activation of the LM head ("softmax" = probabilities,
            "linear" = logits).
        with_lm: bert4keras' switch of the LM head: True (use final_activation),
            an activation name, or False (the decoder returns hidden states).
        with_context_mask: give the decoder model a third input,
            "Input-Context-Mask" (batch, context_len), masking padded context.
        decoder_start_token_id: first decoder token (default pad_token_id).
        attention_dropout_rate: dropout on attention probabilities (default
            dropout_rate, as in T5).
        **kwargs: the `Transformer` arguments.
    """

    norm_position = "pre"
    # A model-name alias (e.g. "t5.1.1") pins the version.
    fixed_version = None
    # The decoder stack: causal mask, unidirectional position buckets.
    causal = False
    # The stacks whose checkpoint names the builder maps.
    stacks = ()
    ignored_variable_patterns = Transformer.ignored_variable_patterns + (
        # HF's copies of the shared table, and a bias T5 never uses.
        r"^(encoder|decoder)\.embed_tokens\.weight$",
        r"EncDecAttention\.relative_attention_bias\.weight$",
    )

    def __init__(
        self,
        hidden_act=None,
        version=None,
        feed_forward_proj=None,
        tie_word_embeddings=None,
        scale_decoder_outputs=None,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        num_decoder_layers=None,
        final_activation="softmax",
        with_lm=True,
        with_context_mask=False,
        decoder_start_token_id=None,
        layer_norm_epsilon=1e-6,
        dropout_rate=None,
        attention_dropout_rate=None,
        application="encoder",
        **kwargs,
    ):
        who = type(self).__name__
        version, hidden_act = check_version_options(
            who,
            version or self.fixed_version or "t5.1.0",
            self.fixed_version,
            hidden_act,
            feed_forward_proj,
            tie_word_embeddings if scale_decoder_outputs is None else scale_decoder_outputs,
            "tie_word_embeddings" if scale_decoder_outputs is None else "scale_decoder_outputs",
        )
        gated = version != "t5.1.0"
        if kwargs.get("embedding_size") not in (None, kwargs.get("hidden_size")):
            raise ValueError(f"{who}: embedding_size must equal hidden_size in T5")
        application = check_application(application)
        if application != "encoder" and not (application == "lm" and self.causal):
            raise ValueError(
                f"{who}: application={application!r} is not available; T5's masks are fixed "
                "(bidirectional encoder, causal decoder)"
            )
        if attention_dropout_rate is None:
            attention_dropout_rate = dropout_rate
        super().__init__(
            hidden_act=hidden_act,
            layer_norm_epsilon=layer_norm_epsilon,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            application="lm" if self.causal else "encoder",
            **kwargs,
        )
        self.version = version
        self.feed_forward_proj = feed_forward_proj
        self.tie_word_embeddings = not gated
        self.scale_decoder_outputs = not gated
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_max_distance = relative_attention_max_distance
        self.num_decoder_layers = num_decoder_layers or self.num_hidden_layers
        self.final_activation = final_activation
        self.with_lm = with_lm
        self.with_context_mask = with_context_mask
        self.decoder_start_token_id = (
            self.pad_token_id if decoder_start_token_id is None else decoder_start_token_id
        )

    # ------------------------------------------------------------------ configs
    # The HF class `hf_config` records, after "T5" / "MT5" (None: no HF class).
    hf_architecture = None
    google_config_file = "t5_config.json"

    def config_arguments(self):
        arguments = super().config_arguments()
        arguments.pop("embedding_size", None)
        arguments.update(
            attention_head_size=self.attention_head_size,
            num_decoder_layers=self.num_decoder_layers,
            relative_attention_num_buckets=self.relative_attention_num_buckets,
            relative_attention_max_distance=self.relative_attention_max_distance,
            decoder_start_token_id=self.decoder_start_token_id,
        )
        return arguments

    def hf_config(self):
        """The HF `config.json` dict (T5 / mT5: ForConditionalGeneration, EncoderModel)."""
        if self.hf_architecture is None:
            return super().hf_config()
        arguments = self.config_arguments()
        for name in ("hidden_act", "attention_dropout_rate", "initializer_range"):
            del arguments[name]  # HF's T5 has no key for them (one dropout rate)
        mt5 = self.version == "mt5.1.1"
        config = export_config(arguments, "t5", model_type="mt5" if mt5 else "t5")
        config.update(
            feed_forward_proj=hf_feed_forward_proj(self.hidden_act),
            tie_word_embeddings=self.tie_word_embeddings,
            is_encoder_decoder=True,
            architectures=[("MT5" if mt5 else "T5") + self.hf_architecture],
        )
        return config

    def google_config(self):
        """bert4keras' T5 config dict (BERT's keys plus T5's own: attention_head_size,
        the relative buckets; hidden_act a pair for the gated versions)."""
        return export_config(self.config_arguments(), "bert")

    def norm_arguments(self):
        """T5's RMS norm: no mean, no beta."""
        return {"epsilon": self.layer_norm_epsilon, "zero_mean": False, "center": False}

    def apply_attention(self, inputs, name, arguments, cross_attention=False):
        return self.apply(
            inputs,
            MultiHeadAttention,
            arguments=arguments,
            heads=self.num_attention_heads,
            head_size=self.attention_head_size,
            out_dim=self.hidden_size,
            key_size=self.attention_key_size,
            use_bias=False,
            attention_scale=False,
            attention_dropout=self.attention_dropout_rate,
            kernel_initializer=self.initializer,
            cross_attention=cross_attention,
            name=name,
        )

    def apply_feed_forward(self, x, name):
        return self.apply(
            x,
            FeedForward,
            units=self.intermediate_size,
            activation=self.hidden_act,
            use_bias=False,
            kernel_initializer=self.initializer,
            name=name,
        )

    def apply_token_embedding(self, token_ids):
        return self.apply(
            token_ids,
            Embedding,
            input_dim=self.vocab_size,
            output_dim=self.hidden_size,
            embeddings_initializer=self.initializer,
            name="Embedding-Token",
        )

    def compute_position_bias(self, x, stack):
        """The stack's (1, heads, len, len) relative position bias, built once."""
        return self.apply(
            [x, x],
            RelativePositionEmbeddingT5,
            input_dim=self.relative_attention_num_buckets,
            output_dim=self.num_attention_heads,
            max_distance=self.relative_attention_max_distance,
            bidirectional=not self.causal,
            embeddings_initializer=self.initializer,
            name=f"{stack}-Embedding-Relative-Position",
        )

    # ------------------------------------------------------------------ mappings
    def load_lm_head(self, value):
        """HF lm_head.weight (vocab, hidden) -> Dense kernel, vocab pruned."""
        return self.load_embeddings(value).T

    def save_lm_head(self, value):
        return value.T

    def load_logits(self, value):
        """Google decoder/logits/kernel (hidden, vocab), vocab pruned."""
        return self.load_embeddings(value.T).T

    def save_logits(self, value):
        return value

    def variable_mapping(self):
        """Google (mesh-tensorflow) names, as bert4keras' T5 mapping has them."""
        return self._mapping(google=True)

    def hf_variable_mapping(self):
        """HF T5ForConditionalGeneration names (T5EncoderModel's for the encoder)."""
        return self._mapping(google=False)

    def _mapping(self, google):
        mapping = {}
        for stack in self.stacks:
            depth = self.num_decoder_layers if stack == "Decoder" else self.num_hidden_layers
            mapping.update(self._stack_mapping(stack, depth, google))
        return mapping

    def _stack_mapping(self, stack, depth, google):
        """Names of one stack's layers: {layer: {path: entry}} in Google or HF spelling."""
        parts = [("SelfAttention", "MultiHeadSelfAttention")]
        if stack == "Decoder":
            parts.append(("EncDecAttention", "MultiHeadCrossAttention"))
        if self.version == "t5.1.0":
            feed_forward = {"wi": "i_dense", "wo": "o_dense"}
        else:  # gated: our FeedForward's i0_dense (activated) and i1_dense (linear)
            feed_forward = {"wi_0": "i0_dense", "wi_1": "i1_dense", "wo": "o_dense"}
        attention = dict(zip("qkvo", ATTENTION_DENSES, strict=True))
        norm = "rms_norm" if self.version == "mt5.1.1" else "layer_norm"
        s = stack.lower()
        mapping = {}
        for i in range(depth):
            ours = f"{stack}-Transformer-{i}-"
            for index, (theirs, layer) in enumerate(parts + [("DenseReluDense", "FeedForward")]):
                denses = feed_forward if theirs == "DenseReluDense" else attention
                if google:
                    base = f"{s}/block_{i:03d}/layer_{index:03d}/"
                    mapping[ours + layer + "-Norm"] = {"gamma": f"{base}{norm}/scale"}
                    kernel = "/kernel" if theirs == "DenseReluDense" else ""
                    mapping[ours + layer] = {
                        f"{at}/kernel": f"{base}{theirs}/{w}{kernel}" for w, at in denses.items()
                    }
                else:
                    base = f"{s}.block.{i}.layer.{index}."
                    mapping[ours + layer + "-Norm"] = hf_norm(f"{base}layer_norm", center=False)
                    mapping[ours + layer] = {}
                    for w, at in denses.items():
                        mapping[ours + layer].update(
                            hf_linear(f"{base}{theirs}.{w}", at, bias=False)
                        )
        if google:
            final = f"{s}/{'rms_norm' if self.version == 'mt5.1.1' else 'final_layer_norm'}/scale"
            bias = f"{s}/block_000/layer_000/SelfAttention/relative_attention_bias"
            # mesh-tensorflow stores the table as (heads, buckets).
            mapping[f"{stack}-Embedding-Relative-Position"] = {"embeddings": (bias, "transpose")}
            mapping[f"{stack}-Output-Norm"] = {"gamma": final}
            mapping["Embedding-Token"] = {"embeddings": ("shared/embedding", "embeddings")}
        else:
            bias = f"{s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            mapping[f"{stack}-Embedding-Relative-Position"] = {"embeddings": bias}
            mapping[f"{stack}-Output-Norm"] = hf_norm(f"{s}.final_layer_norm", center=False)
            mapping["Embedding-Token"] = {"embeddings": ("shared.weight", "embeddings")}
        if stack == "Decoder" and self.version != "t5.1.0":
            mapping["Decoder-Output-LM"] = {
                "kernel": ("decoder/logits/kernel", "logits")
                if google
                else ("lm_head.weight", "lm_head")
            }
        return mapping

    def _choose_mapping(self, names):
        convention, resolved = super()._choose_mapping(names)
        head = resolved.get("Decoder-Output-LM")
        if convention == "hf" and head and head["kernel"][0] is None and "shared.weight" in names:
            # transformers >= 5 ties lm_head to the shared table and then writes
            # shared.weight alone: that table is the head.
            resolved["Decoder-Output-LM"] = {
                "kernel": ("shared.weight", head["kernel"][1], "lm_head")
            }
        return convention, resolved


class T5_Encoder(T5_Base):
    """The T5 encoder: token ids ("Encoder-Input-Token") -> hidden states.

    Positions holding pad_token_id are masked out as attention keys. Loads the
    encoder half of a full checkpoint (the decoder's tensors are left alone).

    Args:
        **kwargs: the `T5_Base` arguments (decoder-only ones are ignored).

    Example:
        >>> encoder = build_transformer_model("config.json", "model.safetensors",
        ...                                   model="mt5.1.1_encoder")
        >>> hidden = encoder.predict(token_ids)          # (batch, len, d_model)
    """

    body_prefixes = ("encoder/", "encoder.")
    stacks = ("Encoder",)
    hf_architecture = "EncoderModel"

    def get_inputs(self):
        shape = (self.sequence_length,)
        return keras.Input(shape=shape, dtype="int32", name=self.prefix + "Encoder-Input-Token")

    def apply_embeddings(self, inputs):
        token_ids = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        self.token_mask = self.padding_mask(token_ids)
        x = self.apply_token_embedding(token_ids)
        return self.apply(
            x, keras.layers.Dropout, rate=self.dropout_rate, name="Encoder-Embedding-Dropout"
        )

    def apply_main_layers(self, inputs, index):
        if self.position_bias is None:
            self.position_bias = self.compute_position_bias(inputs, "Encoder")
        name = f"Encoder-Transformer-{index}-"
        arguments = {"attention_mask": self.token_mask, "attention_bias": self.position_bias}
        x = self.apply_residual(
            inputs,
            name + "MultiHeadSelfAttention",
            lambda h: self.apply_attention([h, h, h], name + "MultiHeadSelfAttention", arguments),
        )
        return self.apply_residual(
            x, name + "FeedForward", lambda h: self.apply_feed_forward(h, name + "FeedForward")
        )

    def apply_final_layers(self, inputs):
        x = self.apply(
            inputs, LayerNormalization, **self.norm_arguments(), name="Encoder-Output-Norm"
        )
        return self.apply(
            x, keras.layers.Dropout, rate=self.dropout_rate, name="Encoder-Output-Dropout"
        )


class T5_Decoder(T5_Base):
    """The T5 decoder: [context, token ids] -> next-token probabilities.

    Inputs are "Input-Context" (batch, context_len, hidden_size), the encoder
    output, and "Decoder-Input-Token" (starting with decoder_start_token_id);
    with_context_mask=True adds "Input-Context-Mask" (batch, context_len),
    1 on real context tokens. Self-attention is causal only (T5's start token is
    the pad id, so no key padding is masked); cross-attention masks the context
    padding when a mask is given. Loads the decoder half of a full checkpoint
    (with the shared token table).

    Args:
        **kwargs: the `T5_Base` arguments; num_decoder_layers sets the depth.

    Example:
        >>> decoder = build_transformer_model("config.json", "model.safetensors",
        ...                                   model="t5.1.1_decoder", with_context_mask=True)
        >>> probs = decoder.predict([context, decoder_ids, context_mask])
    """

    causal = True
    body_prefixes = ("decoder/", "decoder.")
    stacks = ("Decoder",)
    lm_activation_layer = "Decoder-Output-LM-Activation"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.num_hidden_layers = self.num_decoder_layers

    def get_inputs(self):
        p = self.prefix
        inputs = [
            keras.Input(shape=(self.sequence_length, self.hidden_size), name=p + "Input-Context"),
            keras.Input(shape=(None,), dtype="int32", name=p + "Decoder-Input-Token"),
        ]
        if self.with_context_mask:
            inputs.append(
                keras.Input(
                    shape=(self.sequence_length,), dtype="int32", name=p + "Input-Context-Mask"
                )
            )
        return inputs

    def compute_attention_bias(self, inputs=None):
        """The causal mask over the decoder tokens (not the context)."""
        return self.apply(inputs[1], AttentionBias, application="lm", name="Attention-LM-Mask")

    def apply_embeddings(self, inputs):
        inputs = list(inputs)
        self.context = inputs[0]
        self.context_mask = inputs[2] if len(inputs) > 2 else None
        x = self.apply_token_embedding(inputs[1])
        return self.apply(
            x, keras.layers.Dropout, rate=self.dropout_rate, name="Decoder-Embedding-Dropout"
        )

    def apply_main_layers(self, inputs, index):
        if self.position_bias is None:
            self.position_bias = self.compute_position_bias(inputs, "Decoder")
            bias = self.position_bias
            if self.attention_bias is not None:
                # (1|batch, 1, q, k) causal + (1, heads, q, k) positions
                bias = ops.add(self.attention_bias, bias)
            self.self_attention_bias = bias
        name = f"Decoder-Transformer-{index}-"
        self_name, cross_name = name + "MultiHeadSelfAttention", name + "MultiHeadCrossAttention"
        c = self.context
        x = self.apply_residual(
            inputs,
            self_name,
            lambda h: self.apply_attention(
                [h, h, h], self_name, {"attention_bias": self.self_attention_bias}
            ),
        )
        x = self.apply_residual(
            x,
            cross_name,
            lambda h: self.apply_attention(
                [h, c, c], cross_name, {"attention_mask": self.context_mask}, cross_attention=True
            ),
        )
        return self.apply_residual(
            x, name + "FeedForward", lambda h: self.apply_feed_forward(h, name + "FeedForward")
        )

    def apply_final_layers(self, inputs):
        x = self.apply(
            inputs, LayerNormalization, **self.norm_arguments(), name="Decoder-Output-Norm"
        )
        x = self.apply(
            x, keras.layers.Dropout, rate=self.dropout_rate, name="Decoder-Output-Dropout"
        )
        if not self.with_lm:
            return x
        if self.version == "t5.1.0":
            # The tied head sees the output scaled by hidden_size ** -0.5 (mesh-tf, HF).
            x = self.apply(
                x, keras.layers.Rescaling, scale=self.hidden_size**-0.5, name="Decoder-Output-Scale"
            )
            x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        else:
            x = self.apply(
                x,
                keras.layers.Dense,
                units=self.vocab_size,
                use_bias=False,
                kernel_initializer=self.initializer,
                name="Decoder-Output-LM",
            )
        activation = self.final_activation if self.with_lm is True else self.with_lm
        return self.apply(x, OutputActivation, activation=activation, name=self.lm_activation_layer)


class T5(T5_Base):
    """T5 encoder-decoder: [encoder ids, decoder ids] -> decoder probabilities.

    Builds `encoder` (T5_Encoder's model), `decoder` (T5_Decoder's) and
    `model`, which runs the decoder's layers on the encoder output with the
    encoder padding (pad_token_id) masked in cross-attention. The three share
    their layers ("Embedding-Token" among them); `encoder_builder` and
    `decoder_builder` are the two sub-builders.

    Example:
        >>> t5 = build_transformer_model("config.json", "model.safetensors",
        ...                              model="mt5.1.1", return_keras_model=False)
        >>> context = t5.encoder.predict(token_ids)
        >>> probs = t5.decoder.predict([context, decoder_ids])
    """

    body_prefixes = T5_Encoder.body_prefixes + T5_Decoder.body_prefixes
    stacks = ("Encoder", "Decoder")
    hf_architecture = "ForConditionalGeneration"
    lm_activation_layer = T5_Decoder.lm_activation_layer

    def __init__(self, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        kwargs["version"] = self.version
        self.encoder_builder = T5_Encoder(name=f"{name}_Encoder" if name else "Encoder", **kwargs)
        self.decoder_builder = T5_Decoder(name=f"{name}_Decoder" if name else "Decoder", **kwargs)
        self.encoder = self.decoder = None

    def build(self, **kwargs):
        """Builds the encoder, the decoder and the full model (once)."""
        if self.built:
            return self.model
        encoder_builder, decoder_builder = self.encoder_builder, self.decoder_builder
        for builder in (encoder_builder, decoder_builder):
            builder.defer_initialization = self.defer_initialization
        self.encoder = encoder_builder.build()
        table = self.prefix + "Embedding-Token"
        decoder_builder.layers[table] = encoder_builder.layers[table]  # one shared table
        self.decoder = decoder_builder.build()

        token_ids = self.encoder.inputs[0]
        decoder_ids = decoder_builder.inputs[1]
        context_mask = encoder_builder.padding_mask(token_ids)
        outputs = decoder_builder.forward([self.encoder.outputs[0], decoder_ids, context_mask])
        self.set_inputs([token_ids, decoder_ids])
        self.set_outputs(outputs)
        self.model = keras.Model(self.inputs, self.output, name=self.name)
        self.layers = {**encoder_builder.layers, **decoder_builder.layers}
        self.encoder._kf_builder = encoder_builder
        self.decoder._kf_builder = decoder_builder
        self.model._kf_builder = self
        self.built = True
        return self.model

    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        super().load_weights_from_checkpoint(checkpoint, mapping)
        for builder in (self.encoder_builder, self.decoder_builder):
            builder.defer_initialization = False


def _versioned(cls, version, name):
    """`cls` pinned to one T5 version (the class behind a model= name)."""
    doc = f"{cls.__name__} with version={version!r} (model name {name!r})."
    return type(cls.__name__, (cls,), {"fixed_version": version, "__doc__": doc})


# model= name -> builder class; "t5" is t5.1.0, as in bert4keras.
T5_MODELS = {}
for _version in VERSIONS:
    for _suffix, _cls in (("", T5), ("_encoder", T5_Encoder), ("_decoder", T5_Decoder)):
        T5_MODELS[_version + _suffix] = _versioned(_cls, _version, _version + _suffix)
for _suffix in ("", "_encoder", "_decoder"):
    T5_MODELS["t5" + _suffix] = T5_MODELS["t5.1.0" + _suffix]
