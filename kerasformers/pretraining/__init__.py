"""Pretraining (bert4keras' `examples/pretraining/`): corpus -> vocab -> sharded files,
whole-word masking and GPT / UniLM sample builders, a resumable training loop
with bert4keras' optimizer stack, and scale-out through `keras.distribution`
(JAX) or torch DDP (`kerasformers.backend.distribution`).

Example:
    >>> from kerasformers import pretraining as P
    >>> vocab = P.build_vocab(P.iter_texts(sources))
    >>> P.write_shards(P.iter_texts(sources), "shards/", vocab, max_tokens=126)
    >>> data = P.ShardedDataset("shards/", P.MLMSampleBuilder(vocab, 128), 32)
    >>> P.compile_for_pretraining(model, P.pretraining_optimizer(total_steps=10000))
    >>> P.train(model, data, steps=10000, checkpoint_dir="ckpt/", checkpoint_every=500)
"""

from kerasformers.backend.distribution import (
    LAYOUT_RULES,
    configure_distribution,
    initialize_multihost,
    layout_map,
)
from kerasformers.pretraining.corpus import (
    SPECIAL_TOKENS,
    build_vocab,
    encode_words,
    is_heldout,
    iter_texts,
    offline_chinese_sources,
    pack_instances,
    read_shard,
    shard_files,
    write_shards,
)
from kerasformers.pretraining.dataset import START, ShardedDataset
from kerasformers.pretraining.loop import (
    compile_for_pretraining,
    evaluate,
    export_pretrained,
    google_bert_config,
    latest_checkpoint,
    pretraining_optimizer,
    restore_checkpoint,
    save_checkpoint,
    train,
    training_state,
)
from kerasformers.pretraining.samples import (
    BUILDERS,
    LMSampleBuilder,
    MLMSampleBuilder,
    UniLMSampleBuilder,
    collate,
    whole_word_mask,
)

__all__ = [
    "BUILDERS",
    "LAYOUT_RULES",
    "LMSampleBuilder",
    "MLMSampleBuilder",
    "SPECIAL_TOKENS",
    "START",
    "ShardedDataset",
    "UniLMSampleBuilder",
    "build_vocab",
    "collate",
    "compile_for_pretraining",
    "configure_distribution",
    "encode_words",
    "evaluate",
    "export_pretrained",
    "google_bert_config",
    "initialize_multihost",
    "is_heldout",
    "iter_texts",
    "latest_checkpoint",
    "layout_map",
    "offline_chinese_sources",
    "pack_instances",
    "pretraining_optimizer",
    "read_shard",
    "restore_checkpoint",
    "save_checkpoint",
    "shard_files",
    "train",
    "training_state",
    "whole_word_mask",
    "write_shards",
]
