"""Train steps that also use the gradient with respect to an embedding table
(FGM adversarial training, gradient penalty), one per backend."""

import contextlib
import functools

import keras
from keras import ops

from kerasformers.backend.recompute import _recompute_suspended


# ----------------------------------------------- train steps on embedding grads
def embedding_train_step(model, variable, method, epsilon):
    """A `train_step` for `model` that also uses the gradient of the loss with
    respect to `variable` (an embedding table), for the current backend.

    method "fgm": adds `delta = epsilon * g / ||g||` to the table, computes the
    gradients again there, removes delta and applies the sum of both gradients.
    method "gradient_penalty": minimises `loss + 0.5 * epsilon * ||g||^2`.
    Metrics are those of the unperturbed forward; the logged loss is the clean
    loss (fgm) or the penalised one (gradient_penalty). Used by
    `kerasformers.training`; see there.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_embedding_step(model, variable, method, epsilon)
    if backend not in ("torch", "tensorflow"):
        raise NotImplementedError(f"{method} is not available on the {backend} backend")
    return _eager_embedding_step(model, variable, method, epsilon, backend)


def _trainable_index(model, variable):
    """Position of `variable` in `model.trainable_variables` (looked up per step:
    freezing layers after the set-up changes it)."""
    for i, v in enumerate(model.trainable_variables):
        if v is variable:
            return i
    raise ValueError(f"the embedding table {variable.path!r} is not trainable in this model")


def _jax_embedding_step(model, variable, method, epsilon):
    import jax
    import jax.numpy as jnp

    def train_step(state, data):
        trainable, non_trainable, optimizer_vars, metrics_vars = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        index = _trainable_index(model, variable)

        def loss_fn(trainable, non_trainable):
            return model.compute_loss_and_updates(
                trainable,
                non_trainable,
                metrics_vars,
                x,
                y,
                sample_weight,
                training=True,
                optimizer_variables=optimizer_vars,
            )

        def with_table(trainable, table):
            return trainable[:index] + [table] + trainable[index + 1 :]

        if method == "fgm":
            (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, non_trainable)
            g = grads[index]
            delta = epsilon * g / (jnp.sqrt(jnp.sum(jnp.square(g))) + 1e-8)
            adv_trainable = with_table(trainable, trainable[index] + delta)
            (_, adv_aux), adv_grads = jax.value_and_grad(loss_fn, has_aux=True)(
                adv_trainable, aux[2]
            )
            grads = [_add(a, b) for a, b in zip(grads, adv_grads, strict=True)]
            loss, y_pred, non_trainable, new_metrics = aux[0], aux[1], adv_aux[2], aux[3]
        else:

            def penalised(trainable):
                def clean(table):
                    _, aux = loss_fn(with_table(trainable, table), non_trainable)
                    return aux[0], aux  # unscaled: the penalty is on the true gradient

                (loss, aux), g = jax.value_and_grad(clean, has_aux=True)(trainable[index])
                total = loss + 0.5 * epsilon * jnp.sum(jnp.square(g))
                mapping = list(zip(model.optimizer.variables, optimizer_vars, strict=True))
                with keras.StatelessScope(state_mapping=mapping):
                    scaled = model.optimizer.scale_loss(total)
                return scaled, (total,) + aux[1:]

            (_, aux), grads = jax.value_and_grad(penalised, has_aux=True)(trainable)
            loss, y_pred, non_trainable, new_metrics = aux
        trainable, optimizer_vars = model.optimizer.stateless_apply(
            optimizer_vars, grads, trainable
        )
        logs, metrics_vars = model._update_metrics_variables(
            new_metrics, loss, x, y, y_pred, sample_weight
        )
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)

    return train_step


def _eager_embedding_step(model, table, method, epsilon, backend):
    if backend == "torch":
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        no_grad, norm = torch.no_grad, torch.linalg.vector_norm
        # The double backward of the penalty needs attention made of plain ops.
        penalty_context = functools.partial(sdpa_kernel, [SDPBackend.MATH])

        def gradients(x, y, sample_weight, penalty=False):
            y_pred, loss = _forward(model, x, y, sample_weight)
            weights = [v.value for v in model.trainable_variables]
            if penalty:
                (g,) = torch.autograd.grad(loss, table.value, create_graph=True)
                loss = loss + 0.5 * epsilon * torch.sum(g * g)
            grads = torch.autograd.grad(_scale(model, loss), weights, allow_unused=True)
            return y_pred, loss, list(grads)

    else:
        import tensorflow as tf

        no_grad, norm = contextlib.nullcontext, tf.norm
        penalty_context = _recompute_suspended

        def gradients(x, y, sample_weight, penalty=False):
            with tf.GradientTape() as tape:
                if penalty:
                    with tf.GradientTape() as inner:
                        y_pred, loss = _forward(model, x, y, sample_weight)
                    g = tf.convert_to_tensor(inner.gradient(loss, table))
                    loss = loss + 0.5 * epsilon * tf.reduce_sum(g * g)
                else:
                    y_pred, loss = _forward(model, x, y, sample_weight)
                scaled = _scale(model, loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            # The embedding's gradient is an IndexedSlices: make it dense to add.
            return y_pred, loss, [None if g is None else tf.convert_to_tensor(g) for g in grads]

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        index = _trainable_index(model, table)
        if method == "fgm":
            y_pred, loss, grads = gradients(x, y, sample_weight)
            g = grads[index]
            if g is None:
                raise ValueError(f"the loss does not depend on the embedding {table.path!r}")
            with no_grad():
                original = ops.copy(table.value)
                table.assign(original + epsilon * g / (norm(g) + 1e-8))
            try:
                adv_grads = gradients(x, y, sample_weight)[2]
            finally:
                with no_grad():
                    table.assign(original)  # exactly back, not original + delta - delta
            grads = [_add(a, b) for a, b in zip(grads, adv_grads, strict=True)]
        else:
            with penalty_context():
                y_pred, loss, grads = gradients(x, y, sample_weight, penalty=True)
        batch = ops.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]
        model._loss_tracker.update_state(ops.stop_gradient(loss), sample_weight=batch)
        with no_grad():
            model.optimizer.apply(grads, model.trainable_variables)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step


def _add(a, b):
    return b if a is None else a if b is None else a + b


def _forward(model, x, y, sample_weight):
    y_pred = model(x, training=True)
    loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    return y_pred, loss


def _scale(model, loss):
    return loss if model.optimizer is None else model.optimizer.scale_loss(loss)
