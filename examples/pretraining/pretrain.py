"""Pretrains a BERT/RoBERTa-style model (MLM, GPT-style LM or UniLM) on shards
written by `examples/pretraining/data_utils.py`, with periodic checkpoints, exact resume,
held-out evaluation and a model directory `build_transformer_model` loads.

Single process (any backend):
    KERAS_BACKEND=jax python examples/pretraining/pretrain.py --data runs/pretrain_data \\
        --out runs/pretrain_small --steps 4000

JAX on several devices (`--distribution data|model`, `--model-parallel N`); multi-host:
add `--coordinator-address HOST:PORT --num-processes N --process-id I` on each host.

PyTorch DDP:
    KERAS_BACKEND=torch torchrun --nproc_per_node 2 examples/pretraining/pretrain.py ...

Run it again with the same `--checkpoint-dir` to resume where it stopped.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402

from kerasformers import pretraining as P  # noqa: E402
from kerasformers.backend import distribution as ddp  # noqa: E402
from kerasformers.models import build_transformer_model  # noqa: E402
from kerasformers.tokenizers import load_vocab  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--data", required=True, help="folder with vocab.txt, train/ and heldout/ shards")
    a("--out", help="write the final model directory here (config.json, vocab.txt, weights)")
    a("--checkpoint-dir", help="training checkpoints (default OUT/checkpoints)")
    a("--task", choices=sorted(P.BUILDERS), default="mlm")
    a("--model", default="bert", help="builder family (bert/roberta/...)")
    a("--layers", type=int, default=4)
    a("--hidden", type=int, default=256)
    a("--heads", type=int, default=4)
    a("--intermediate", type=int, default=1024)
    a("--dropout", type=float, default=0.1)
    a("--maxlen", type=int, default=128)
    a("--batch-size", type=int, default=32, help="global batch size")
    a("--steps", type=int, default=1000, help="total batches")
    a("--lr", type=float, default=1e-3)
    a("--warmup", type=int, default=100)
    a("--optimizer", choices=["lamb", "adam"], default="lamb")
    a("--weight-decay", type=float, default=0.01)
    a("--grad-accum", type=int, default=1)
    a("--dtype-policy", default=None, help="e.g. mixed_bfloat16")
    a("--recompute", action="store_true", help="gradient checkpointing")
    a("--distribution", choices=ddp.KINDS, default="none", help="jax only")
    a("--model-parallel", type=int, default=2, help="model axis size for --distribution model")
    a("--coordinator-address")
    a("--num-processes", type=int)
    a("--process-id", type=int)
    a("--seed", type=int, default=0)
    a("--checkpoint-every", type=int, default=500)
    a("--eval-every", type=int, default=500)
    a("--eval-batches", type=int, default=None, help="limit held-out batches")
    a("--log-every", type=int, default=50)
    a("--stop-after", type=int, default=None, help="stop at this step (simulates a preemption)")
    a("--history", help="write the training history (JSON) here")
    return p.parse_args(argv)


def build(args, vocab):
    config = {
        "vocab_size": len(vocab),
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "intermediate_size": args.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": args.dropout,
        "attention_probs_dropout_prob": args.dropout,
        "max_position_embeddings": args.maxlen,
        "type_vocab_size": 2,
    }
    application = {"mlm": "encoder", "lm": "lm", "unilm": "unilm"}[args.task]
    return build_transformer_model(
        config,
        model=args.model,
        application=application,
        with_mlm="linear",
        recompute=args.recompute,
        return_keras_model=False,
    )


def main(argv=None):
    args = parse_args(argv)
    backend = keras.backend.backend()
    if backend == "jax":
        P.initialize_multihost(args.coordinator_address, args.num_processes, args.process_id)
    elif backend == "torch":
        ddp.init_process_group()
    rank, world = ddp.process_info()
    log = print if rank == 0 else (lambda *a, **k: None)
    if args.dtype_policy:
        keras.config.set_dtype_policy(args.dtype_policy)
    P.configure_distribution(args.distribution, args.model_parallel)
    keras.utils.set_random_seed(args.seed)

    vocab = load_vocab(os.path.join(args.data, "vocab.txt"))
    builder = P.BUILDERS[args.task](vocab, args.maxlen)
    train_data = P.ShardedDataset(
        os.path.join(args.data, "train"),
        builder,
        args.batch_size,
        seed=args.seed,
        rank=rank if backend == "torch" else 0,
        world_size=world if backend == "torch" else 1,
    )
    if backend == "jax" and world > 1:  # each host feeds its slice of the global batch
        train_data = P.ShardedDataset(
            train_data.files, builder, args.batch_size, args.seed, rank=rank, world_size=world
        )
    heldout = P.ShardedDataset(
        os.path.join(args.data, "heldout"),
        builder,
        train_data.batch_size,
        seed=12345,  # fixed masks: numbers comparable across steps and runs
        shuffle=False,
        rank=train_data.rank,
        world_size=train_data.world_size,
    )

    transformer = build(args, vocab)
    model = transformer.model
    optimizer = P.pretraining_optimizer(
        args.lr,
        total_steps=args.steps,
        warmup_steps=args.warmup,
        weight_decay_rate=args.weight_decay,
        grad_accum_steps=args.grad_accum,
        optimizer=args.optimizer,
    )
    P.compile_for_pretraining(model, optimizer)
    if backend == "torch" and world > 1:
        ddp.data_parallel(model)
    log(f"{backend}, {world} process(es), {model.count_params():,} parameters, vocab {len(vocab)}")

    def evaluate(m):
        batches = heldout.batches(epochs=1, pad_last=True)
        if args.eval_batches:
            batches = (b for i, b in zip(range(args.eval_batches), batches, strict=False))
        return P.evaluate(m, batches)

    checkpoint_dir = args.checkpoint_dir or (args.out and os.path.join(args.out, "checkpoints"))
    started = time.perf_counter()
    history = P.train(
        model,
        train_data,
        args.steps,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        evaluate_fn=evaluate if args.eval_every else None,
        eval_every=args.eval_every,
        log_every=args.log_every,
        log=lambda *a: log(*a, flush=True),
        is_chief=rank == 0,
        stop_after=args.stop_after,
    )
    log(f"trained in {time.perf_counter() - started:.0f} s")
    if rank == 0:
        if args.history:
            with open(args.history, "w") as f:
                json.dump({"args": vars(args), "history": history}, f, indent=1)
        if args.out:  # the model as of the last step trained (a stopped run too)
            for path in P.export_pretrained(transformer, args.out, vocab):
                log("wrote", path)
    ddp.barrier()
    ddp.destroy_process_group()
    return history


if __name__ == "__main__":
    main()
