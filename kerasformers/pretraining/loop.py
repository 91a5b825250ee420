"""Pretraining loop: the optimizer stack, the loss, checkpoints with exact
resume, held-out evaluation and the output model directory.

A checkpoint holds every model variable (weights and dropout seed states),
every optimizer variable (moments, step counters, gradient accumulators) and
the data position, written atomically as one `.npz` plus a JSON record. Since
the data stream is a pure function of its position (see `dataset`), resuming
from step k and training to step n gives the same weights as an uninterrupted
run to n.
"""

import json
import os
import time

import keras
import numpy as np

from kerasformers import optimizers as O
from kerasformers.backend import distribution as ddp

# The optimizer stack of bert4keras' pretraining.py, registered once.
AdamWLR = O.AdamWLR
AdamWLRG = O.extend_with_gradient_accumulation(AdamWLR, "PretrainingAdamWLRG")
LAMBLR = O.extend_with_piecewise_linear_lr(O.LAMB, "PretrainingLAMBLR")
LAMBLRG = O.extend_with_gradient_accumulation(LAMBLR, "PretrainingLAMBLRG")

NO_DECAY = ["Norm", "bias"]


def pretraining_optimizer(
    learning_rate=1e-3,
    total_steps=10000,
    warmup_steps=1000,
    weight_decay_rate=0.01,
    grad_accum_steps=1,
    optimizer="lamb",
    end_learning_rate=0.0,
):
    """Weight decay + (LAMB or Adam) + linear warmup/decay + gradient accumulation.

    Args:
        learning_rate: peak learning rate.
        total_steps: batches until the rate reaches `end_learning_rate` times the
            peak (the schedule counts batches, accumulation included).
        warmup_steps: batches of linear warmup from 0.
        weight_decay_rate: decoupled weight decay (not on norms and biases).
        grad_accum_steps: batches per update.
        optimizer: "lamb" (layer-wise adaptation, bert4keras' choice for large
            batches) or "adam".
        end_learning_rate: final multiplier of the peak rate.

    Returns:
        A Keras optimizer.
    """
    if optimizer not in ("lamb", "adam"):
        raise ValueError(f"optimizer must be 'lamb' or 'adam', got {optimizer!r}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}"
        )
    schedule = {int(total_steps): float(end_learning_rate)}
    if warmup_steps:
        schedule[int(warmup_steps)] = 1.0
    kwargs = dict(
        learning_rate=learning_rate,
        weight_decay_rate=weight_decay_rate,
        exclude_from_weight_decay=NO_DECAY,
        lr_schedule=schedule,
    )
    if optimizer == "lamb":
        kwargs["exclude_from_layer_adaptation"] = NO_DECAY
        cls = LAMBLRG if grad_accum_steps > 1 else LAMBLR
    else:
        cls = AdamWLRG if grad_accum_steps > 1 else AdamWLR
    if grad_accum_steps > 1:
        kwargs["grad_accum_steps"] = grad_accum_steps
    return cls(**kwargs)


def compile_for_pretraining(model, optimizer, jit_compile="auto"):
    """Compiles `model` (logits output, `with_mlm="linear"`) with the weighted
    token cross entropy and the weighted accuracy of the predicted positions.

    The loss is `sum(weights * CE) / (batch * length)` (Keras'
    `sum_over_batch_size`): with the builders' weights and a fixed length this
    is a per-predicted-token loss whose normaliser never depends on the data.
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return model


# --------------------------------------------------------------- checkpoints
def _build_optimizer(model):
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _state_variables(model):
    """`[(key, variable)]` of everything a resume needs. Keys are positions, not
    paths: auto-numbered names (`seed_generator_7`, the optimizer's) differ
    from process to process."""
    _build_optimizer(model)
    groups = [("model", model.variables), ("optimizer", model.optimizer.variables)]
    return [
        (f"{prefix}_{i:05d}", v) for prefix, variables in groups for i, v in enumerate(variables)
    ]


def training_state(model):
    """Every variable a resume needs, as `{key: numpy array}`, plus the
    process' random state outside Keras (torch's generator, see
    `kerasformers.backend.distribution.rng_state`)."""
    state = {key: keras.ops.convert_to_numpy(v.value) for key, v in _state_variables(model)}
    state.update(ddp.rng_state())
    return state


def save_checkpoint(directory, model, step, position, keep=2, extra=None):
    """Writes `ckpt-{step}.npz` + `ckpt-{step}.json` and points `latest.json` at
    them; older checkpoints beyond `keep` are removed.

    Args:
        directory: checkpoint folder (created).
        model: the compiled model (its optimizer is saved too).
        step: batches trained so far.
        position: the data position of the next batch.
        keep: how many checkpoints to keep.
        extra: JSON-able dict stored alongside (e.g. the run's arguments).

    Returns:
        The `.npz` path.
    """
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, f"ckpt-{step:08d}")
    with open(base + ".npz.tmp", "wb") as f:
        np.savez(f, **training_state(model))
    os.replace(base + ".npz.tmp", base + ".npz")
    record = {
        "step": int(step),
        "position": position,
        "file": os.path.basename(base) + ".npz",
        "paths": [v.path for _, v in _state_variables(model)],
        "extra": extra or {},
    }
    for path in (base + ".json", os.path.join(directory, "latest.json")):
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
    old = sorted(p for p in os.listdir(directory) if p.startswith("ckpt-") and p.endswith(".npz"))
    for name in old[:-keep] if keep else []:
        for suffix in (".npz", ".json"):
            path = os.path.join(directory, name[: -len(".npz")] + suffix)
            if os.path.exists(path):
                os.remove(path)
    return base + ".npz"


def latest_checkpoint(directory):
    """The record of the newest checkpoint in `directory`, or None."""
    path = os.path.join(directory, "latest.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def restore_checkpoint(directory, model):
    """Loads the newest checkpoint of `directory` into `model` and its optimizer.

    Returns:
        `(step, position)` of the checkpoint, or `(0, None)` if there is none.

    Raises:
        ValueError: the checkpoint was written for a different model/optimizer
            (another variable count, or a variable of another shape).
    """
    record = latest_checkpoint(directory)
    if record is None:
        return 0, None
    path = os.path.join(directory, record["file"])
    variables = _state_variables(model)
    with np.load(path) as data:
        saved = {k: data[k] for k in data.files if not k.startswith("rng_")}
        rng = {k: data[k] for k in data.files if k.startswith("rng_")}
    if len(saved) != len(variables):
        raise ValueError(
            f"checkpoint {path} holds {len(saved)} variables, this model and optimizer "
            f"have {len(variables)}: it was written for another model or optimizer"
        )
    for (key, variable), saved_path in zip(variables, record["paths"], strict=True):
        if tuple(saved[key].shape) != tuple(variable.shape):
            raise ValueError(
                f"checkpoint {path}: {saved_path} has shape {saved[key].shape}, "
                f"this model's {variable.path} is {tuple(variable.shape)}"
            )
    for key, variable in variables:
        variable.assign(saved[key])
    ddp.set_rng_state(rng)
    return record["step"], record["position"]


# ----------------------------------------------------------------- the loop
def evaluate(model, batches):
    """Weighted loss and accuracy over `batches` (`((x, y, w), position)` pairs,
    e.g. `ShardedDataset(..., shuffle=False).batches(epochs=1, pad_last=True)`).

    Returns:
        `{"loss": mean CE per predicted token, "accuracy": fraction of predicted
        tokens whose argmax is right, "tokens": predicted tokens}`.
    """
    loss_sum = correct = count = 0.0
    for (x, y, w), _ in batches:
        logits = keras.ops.convert_to_numpy(model.predict_on_batch(x)).astype("float32")
        mask = w > 0
        picked = logits[mask]
        labels = y[mask]
        shifted = picked - picked.max(-1, keepdims=True)
        logz = np.log(np.exp(shifted).sum(-1))
        loss_sum += float((logz - shifted[np.arange(len(labels)), labels]).sum())
        correct += float((picked.argmax(-1) == labels).sum())
        count += float(mask.sum())
    if not count:
        raise ValueError("evaluation data has no predicted positions")
    return {"loss": loss_sum / count, "accuracy": correct / count, "tokens": int(count)}


def train(
    model,
    dataset,
    steps,
    checkpoint_dir=None,
    checkpoint_every=None,
    resume=True,
    evaluate_fn=None,
    eval_every=None,
    log_every=50,
    log=print,
    is_chief=True,
    stop_after=None,
):
    """Trains `model` for `steps` batches of `dataset`, with periodic
    checkpoints and evaluation; resumes from `checkpoint_dir` when it holds one.

    Args:
        model: a model compiled by `compile_for_pretraining` (or distributed by
            `kerasformers.backend.distribution.data_parallel`).
        dataset: a `ShardedDataset`.
        steps: total batches (a resumed run continues to the same total).
        checkpoint_dir, checkpoint_every: where/how often to checkpoint (and at
            the end).
        resume: load the newest checkpoint of `checkpoint_dir` first.
        evaluate_fn: `fn(model) -> dict` run every `eval_every` steps and at the end.
        log_every: print loss, accuracy and tokens/s every this many steps.
        log: print-like function.
        is_chief: only the chief writes checkpoints (multi-process runs).
        stop_after: stop (after checkpointing) at this step even if `steps` is
            larger, as an interrupted job would.

    Returns:
        A history: list of dicts (step, loss, accuracy, tokens_per_s, eval...).
    """
    step, position = 0, None
    if checkpoint_dir and resume:
        step, position = restore_checkpoint(checkpoint_dir, model)
        if step:
            log(f"resumed from step {step}, data position {position}")
    history, tokens, started = [], 0, time.perf_counter()
    last = stop_after if stop_after is not None else steps
    if step >= last:
        return history
    for (x, y, w), next_position in dataset.batches(position):
        logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
        step += 1
        tokens += int((x[0] != dataset.builder.pad_id).sum()) * dataset.world_size
        record = None
        if log_every and step % log_every == 0 or step == last:
            elapsed = time.perf_counter() - started
            record = {
                "step": step,
                "loss": float(logs["loss"]),
                "accuracy": float(logs.get("accuracy", np.nan)),
                "tokens_per_s": tokens / elapsed,
            }
            log(
                f"step {step}: loss {record['loss']:.4f} acc {record['accuracy']:.4f} "
                f"{record['tokens_per_s']:.0f} tokens/s"
            )
        if evaluate_fn and (eval_every and step % eval_every == 0 or step == last):
            record = record or {"step": step}
            record["eval"] = evaluate_fn(model)
            log(f"step {step}: eval {record['eval']}")
        if record:
            history.append(record)
        if checkpoint_dir and is_chief:
            if checkpoint_every and step % checkpoint_every == 0 or step == last:
                save_checkpoint(checkpoint_dir, model, step, next_position)
        if step >= last:
            break
    return history


# ---------------------------------------------------------------- the output
def google_bert_config(builder):
    """Google `bert_config.json` keys of a BERT/RoBERTa builder."""
    return {
        "attention_probs_dropout_prob": builder.attention_dropout_rate,
        "hidden_act": builder.hidden_act if isinstance(builder.hidden_act, str) else "gelu",
        "hidden_dropout_prob": builder.dropout_rate,
        "hidden_size": builder.hidden_size,
        "initializer_range": builder.initializer_range,
        "intermediate_size": builder.intermediate_size,
        "max_position_embeddings": builder.max_position,
        "num_attention_heads": builder.num_attention_heads,
        "num_hidden_layers": builder.num_hidden_layers,
        "type_vocab_size": builder.segment_vocab_size,
        "vocab_size": builder.vocab_size,
    }


def export_pretrained(builder, directory, token_dict, formats=("safetensors", "tf")):
    """Writes the model directory `build_transformer_model` and the fine-tuning
    examples' `--pretrained DIR` read: `config.json` (Google BERT keys),
    `vocab.txt`, `model.safetensors` (HF BERT names) and/or the Google TF
    checkpoint `bert_model.ckpt.*`, MLM head included.

    Returns:
        The written paths.
    """
    from kerasformers.tokenizers import save_vocab

    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, "config.json"), os.path.join(directory, "vocab.txt")]
    with open(paths[0], "w") as f:
        json.dump(google_bert_config(builder), f, indent=2)
    save_vocab(paths[1], token_dict)
    if "safetensors" in formats:
        paths.append(
            builder.save_weights_as_checkpoint(os.path.join(directory, "model.safetensors"))
        )
    if "tf" in formats:
        paths.append(builder.save_weights_as_checkpoint(os.path.join(directory, "bert_model.ckpt")))
    return paths
