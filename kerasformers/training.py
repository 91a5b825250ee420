"""Training add-ons from bert4keras' examples: adversarial training and gradient penalty.

Both perturb or penalise the loss through its gradient with respect to the
token embedding table. They swap in a train step for `model.fit` (built per
backend in `kerasformers.backend`), so they work with the usual
`compile` / `fit`, callbacks and metrics; nothing else about the model changes.
"""

import numbers

import keras

from kerasformers import backend

__all__ = ["adversarial_training", "gradient_penalty"]


def adversarial_training(model, embedding_name="Embedding-Token", epsilon=1.0):
    """Makes `model.fit` train adversarially on the embeddings (FGM).

    Each step computes the gradient `g` of the loss with respect to the
    embedding table, adds `delta = epsilon * g / ||g||` to the table (the
    worst-case perturbation of norm epsilon, to first order), computes the
    gradients again at that point, takes delta away and applies the sum of the
    two gradients. A step costs about two ordinary ones. The logged loss and
    metrics are those of the unperturbed forward.

    Args:
        model: a `keras.Model` (call before or after `compile`, before `fit`).
        embedding_name: name of the layer whose `embeddings` table is perturbed;
            searched in nested models too.
        epsilon: norm of the perturbation of the whole table.

    Returns:
        The model, changed in place.

    Example:
        >>> model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
        >>> adversarial_training(model, "Embedding-Token", epsilon=0.5)
        >>> model.fit(x, y)

    Reference:
        https://kexue.fm/archives/7234, https://arxiv.org/abs/1605.07725
    """
    return _install(model, embedding_name, epsilon, "fgm", "adversarial_training")


def gradient_penalty(model, embedding_name="Embedding-Token", epsilon=1.0):
    """Makes `model.fit` minimise `loss + 0.5 * epsilon * ||d loss / d embeddings||^2`.

    The gradient penalty on the embedding table, the "soft" counterpart of
    adversarial training: to first order it is the loss at the adversarially
    perturbed embeddings. Needs second derivatives (one double backward per
    step). The logged loss includes the penalty, as in bert4keras' example.

    Args:
        model: a `keras.Model` (call before or after `compile`, before `fit`).
        embedding_name: name of the layer holding the `embeddings` table.
        epsilon: weight of the penalty.

    Returns:
        The model, changed in place.

    Example:
        >>> gradient_penalty(model, "Embedding-Token", epsilon=1.0)
        >>> model.fit(x, y)

    Reference:
        https://kexue.fm/archives/7234
    """
    return _install(model, embedding_name, epsilon, "gradient_penalty", "gradient_penalty")


def _install(model, embedding_name, epsilon, method, caller):
    if not isinstance(model, keras.Model):
        raise TypeError(f"{caller}: model must be a keras.Model, got {type(model).__name__}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon > 0:
        raise ValueError(f"{caller}: epsilon must be a positive number, got {epsilon!r}")
    layer = _find_layer(model, embedding_name)
    if layer is None:
        raise ValueError(
            f"{caller}: no layer named {embedding_name!r} in model {model.name!r}; "
            f"layers with an embedding table: {_embedding_layer_names(model) or 'none'}"
        )
    table = getattr(layer, "embeddings", None)
    if not isinstance(table, keras.Variable):
        raise ValueError(
            f"{caller}: layer {embedding_name!r} ({type(layer).__name__}) has no `embeddings` "
            f"weight; layers with one: {_embedding_layer_names(model) or 'none'}"
        )
    if not any(v is table for v in model.trainable_variables):
        raise ValueError(
            f"{caller}: the embeddings of {embedding_name!r} are not trainable in this model"
        )
    model.train_step = backend.embedding_train_step(model, table, method, float(epsilon))
    # fit builds (and compiles) its train function from train_step on first use.
    model.train_function = None
    return model


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _find_layer(model, name):
    return next((layer for layer in _all_layers(model) if layer.name == name), None)


def _embedding_layer_names(model):
    names = []
    for layer in _all_layers(model):
        if isinstance(getattr(layer, "embeddings", None), keras.Variable):
            names.append(layer.name)
    return names
