"""bert4keras' `AutoRegressiveDecoder` (numpy, one prompt at a time), kept so ported
scripts run unchanged. New code should call `kerasformers.generation.generate`,
which is batched, KV-cached and compiled."""

import functools

import numpy as np


def _softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


class AutoRegressiveDecoder:
    """Beam search and random sampling around a user-written `predict` (bert4keras API).

    Subclass it, decorate `predict(self, inputs, output_ids, states)` with
    `@AutoRegressiveDecoder.wraps(default_rtype=...)` and return the next-token
    probabilities ("probas") or logits ("logits") of each row of `output_ids`;
    then call `beam_search` or `random_sample`. Every step runs the whole
    model again on the whole sequence (no cache), one prompt at a time.

    Moving to `generate`: build the model as a language model
    (`application="unilm"` for seq2seq, or a gpt*), then replace the decoder
    subclass by one call, e.g. `generate(model, [token_ids], segment_ids=
    [segment_ids], max_new_tokens=maxlen, method="beam", num_beams=topk,
    end_id=end_id)`; `random_sample(inputs, n, topk, topp)` becomes
    `method="sample", top_k=..., top_p=..., seed=...` over n copies of the
    prompt. Differences: `generate` scores beams like HF transformers (length
    penalty 1.0 by default; set `length_penalty=0.0` for bert4keras' raw sums)
    and has no `min_ends`.

    Args:
        start_id: id every output starts with (None: outputs start empty).
        end_id: id that ends an output.
        maxlen: maximum number of generated tokens.
        minlen: minimum output length before end_id may end it.

    Example:
        >>> class AutoTitle(AutoRegressiveDecoder):
        ...     @AutoRegressiveDecoder.wraps(default_rtype="probas")
        ...     def predict(self, inputs, output_ids, states):
        ...         token_ids, segment_ids = inputs
        ...         token_ids = np.concatenate([token_ids, output_ids], 1)
        ...         segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        ...         return self.last_token(model).predict([token_ids, segment_ids])
        >>> autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=32)
        >>> autotitle.beam_search([token_ids, segment_ids], topk=3)
    """

    def __init__(self, start_id, end_id, maxlen, minlen=1):
        if not isinstance(maxlen, (int, np.integer)) or maxlen < 1:
            raise ValueError(
                f"AutoRegressiveDecoder: maxlen must be an integer >= 1, got {maxlen!r}"
            )
        self.start_id = start_id
        self.end_id = end_id
        self.maxlen = maxlen
        self.minlen = minlen
        self.models = {}
        if start_id is None:
            self.first_output_ids = np.empty((1, 0), dtype=int)
        else:
            self.first_output_ids = np.array([[start_id]])

    @staticmethod
    def wraps(default_rtype="probas", use_states=False):
        """Decorates `predict`: adds the `temperature` and `rtype` arguments.

        Args:
            default_rtype: what the decorated `predict` returns, "probas" or
                "logits".
            use_states: `predict` returns (scores, states) instead of scores.
        """
        if default_rtype not in ("probas", "logits"):
            raise ValueError(f"default_rtype must be 'probas' or 'logits', got {default_rtype!r}")

        def decorator(predict):
            @functools.wraps(predict)
            def wrapped(self, inputs, output_ids, states, temperature=1, rtype=default_rtype):
                if rtype not in ("probas", "logits"):
                    raise ValueError(f"rtype must be 'probas' or 'logits', got {rtype!r}")
                result = predict(self, inputs, output_ids, states)
                scores, states = result if use_states else (result, None)
                scores = np.asarray(scores, dtype="float64")
                if default_rtype == "logits":
                    probas = _softmax(scores / temperature)
                elif temperature != 1:
                    # p^(1/T), renormalised: softmax(log p / T)
                    probas = np.power(scores, 1.0 / temperature)
                    probas = probas / probas.sum(axis=-1, keepdims=True)
                else:
                    probas = scores
                if rtype == "probas":
                    return probas, states
                return np.log(probas + 1e-12), states

            return wrapped

        return decorator

    def last_token(self, model):
        """A model with the outputs of `model` at the last position only (cached)."""
        import keras

        if model not in self.models:
            outputs = [
                keras.layers.Lambda(lambda x: x[:, -1])(output)
                for output in (model.outputs if len(model.outputs) > 1 else [model.output])
            ]
            self.models[model] = keras.Model(model.inputs, outputs)
        return self.models[model]

    def predict(self, inputs, output_ids, states=None):
        """Next-token scores of every row of `output_ids` given `inputs` (override)."""
        raise NotImplementedError

    def beam_search(self, inputs, topk, states=None, temperature=1, min_ends=1):
        """The best output of a beam search with `topk` beams (scores: sum of log-probs).

        Args:
            inputs: the model inputs of one prompt (a list of 1-D arrays).
            topk: number of beams.
            states: initial states passed to `predict`.
            temperature: softens (>1) or sharpens (<1) the distributions.
            min_ends: how many end_ids end an output.

        Returns:
            The best output, a 1-D array of ids (with start_id and end_id).
        """
        inputs = [np.array([i]) for i in inputs]
        output_ids, output_scores = self.first_output_ids, np.zeros(1)
        for step in range(self.maxlen):
            scores, states = self.predict(inputs, output_ids, states, temperature, "logits")
            if step == 0:
                inputs = [np.repeat(i, topk, axis=0) for i in inputs]
            # (beams, vocab) accumulated scores of every continuation
            scores = output_scores.reshape((-1, 1)) + scores
            flat = scores.ravel()
            best = (
                np.argpartition(flat, -topk)[-topk:] if flat.size > topk else np.arange(flat.size)
            )
            rows, tokens = np.divmod(best, scores.shape[1])
            output_ids = np.concatenate([output_ids[rows], tokens[:, None]], 1)
            output_scores = flat[best]
            ended = output_ids[:, -1] == self.end_id
            end_counts = (output_ids == self.end_id).sum(1)
            if output_ids.shape[1] >= self.minlen:
                top = output_scores.argmax()
                if ended[top] and end_counts[top] >= min_ends:
                    return output_ids[top]
                keep = ~ended | (end_counts < min_ends)
                if not keep.all():  # drop finished beams that are not the best
                    inputs = [i[keep] for i in inputs]
                    output_ids, output_scores = output_ids[keep], output_scores[keep]
                    topk = int(keep.sum())
        return output_ids[output_scores.argmax()]

    def random_sample(
        self, inputs, n, topk=None, topp=None, states=None, temperature=1, min_ends=1
    ):
        """`n` sampled outputs (numpy's global RNG: seed it with np.random.seed).

        Args:
            inputs: the model inputs of one prompt (a list of 1-D arrays).
            n: number of outputs.
            topk: sample among the topk most likely tokens only.
            topp: sample among the smallest set of tokens reaching probability topp.
            states: initial states passed to `predict`.
            temperature: softens (>1) or sharpens (<1) the distributions.
            min_ends: how many end_ids end an output.

        Returns:
            A list of n 1-D arrays of ids.
        """
        inputs = [np.array([i]) for i in inputs]
        output_ids = self.first_output_ids
        results = []
        for step in range(self.maxlen):
            probas, states = self.predict(inputs, output_ids, states, temperature, "probas")
            probas = probas / probas.sum(axis=1, keepdims=True)
            if step == 0:
                probas = np.repeat(probas, n, axis=0)
                inputs = [np.repeat(i, n, axis=0) for i in inputs]
                output_ids = np.repeat(output_ids, n, axis=0)
            candidates = None
            if topk is not None:
                candidates = np.argsort(-probas, axis=1)[:, :topk]
                probas = np.take_along_axis(probas, candidates, axis=1)
                probas = probas / probas.sum(axis=1, keepdims=True)
            if topp is not None:
                order = np.argsort(-probas, axis=1)
                probas = np.take_along_axis(probas, order, axis=1)
                before = np.cumsum(probas, axis=1) - probas
                probas[before >= topp] = 0
                probas = probas / probas.sum(axis=1, keepdims=True)
                candidates = (
                    order if candidates is None else np.take_along_axis(candidates, order, 1)
                )
            picks = np.array([np.random.choice(len(p), p=p) for p in probas])
            if candidates is not None:
                picks = np.take_along_axis(candidates, picks[:, None], axis=1)[:, 0]
            output_ids = np.concatenate([output_ids, picks[:, None]], 1)
            end_counts = (output_ids == self.end_id).sum(1)
            if output_ids.shape[1] >= self.minlen:
                done = end_counts >= min_ends
                if done.any():
                    results.extend(output_ids[done])
                    keep = ~done
                    inputs = [i[keep] for i in inputs]
                    output_ids = output_ids[keep]
                    if len(output_ids) == 0:
                        break
        results.extend(output_ids)
        return results
