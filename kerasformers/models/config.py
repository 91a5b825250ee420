"""Config files: reading them, and translating foreign keys onto builder arguments."""

import json
import os

# Foreign config keys -> our (bert4keras) argument names. The one place they are
# translated (STYLE.md rule 6); a key already given in our spelling wins.
CONFIG_KEY_ALIASES = {
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "max_position_embeddings": "max_position",
    "type_vocab_size": "segment_vocab_size",
    "layer_norm_eps": "layer_norm_epsilon",
    # OpenAI GPT / GPT-2 (HF config.json)
    "n_embd": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_inner": "intermediate_size",
    "n_positions": "max_position",
    "activation_function": "hidden_act",
    "afn": "hidden_act",
    "resid_pdrop": "dropout_rate",
    "attn_pdrop": "attention_dropout_rate",
    # T5 / mT5 (HF config.json; dropout_rate and layer_norm_epsilon are ours already)
    "d_model": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "d_ff": "intermediate_size",
    "d_kv": "attention_head_size",
}


def translate_config(config):
    """Maps a Google `bert_config.json` / HF `config.json` dict onto builder kwargs."""
    out = dict(config)
    for foreign, ours in CONFIG_KEY_ALIASES.items():
        if foreign in out:
            value = out.pop(foreign)
            out.setdefault(ours, value)
    position_type = out.pop("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"position_embedding_type={position_type!r} is not supported by BERT/RoBERTa "
            "here (only 'absolute'); use a family with relative positions (e.g. nezha)"
        )
    if out.get("model_type") == "roberta" and "max_position" in out:
        # HF RoBERTa reserves the first padding_idx + 1 = 2 rows of its table.
        out["max_position"] -= 2
    if out.get("model_type") == "openai-gpt":
        # HF OpenAI GPT: afn "gelu" is the tanh form, and token types are looked
        # up in the token table (CDial-GPT feeds speaker tokens through them).
        if out.get("hidden_act") == "gelu":
            out["hidden_act"] = "gelu_new"
        out.setdefault("shared_segment_embeddings", True)
    return out


def load_config(config_path):
    """Reads a config given as a JSON path, a dict or None."""
    if config_path is None:
        return {}
    if isinstance(config_path, dict):
        return dict(config_path)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"config file not found: {config_path}")
    with open(config_path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {config_path} is not valid JSON: {err}") from err
