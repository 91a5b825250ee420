"""Streaming generation: the new tokens of every step, as soon as it is done.

The fused loop of `generate` cannot hand tokens out before it ends, so
streaming runs its two parts as separately compiled functions (the prefill,
and one step whose caches are written in place; `loop.compiled`) and drives
the steps from Python, stopping as soon as every row has ended. Tokens,
seeds and search rules are the fused loop's: the streamed tokens, joined,
are `generate`'s output for the same arguments.
"""

from keras import ops

from kerasformers.generation.loop import compiled


def check_streaming(settings, caller):
    """Refuses what streaming cannot do (beams reorder their past tokens)."""
    if settings["method"] == "beam":
        raise ValueError(
            f"{caller}: streaming is available for method='greedy' and 'sample' only; beam "
            "search reorders its beams, so no token is final before the search ends"
        )
    if settings["return_logits"]:
        raise ValueError(f"{caller}: return_logits is not available while streaming")


def steps(request):
    """Yields, after each step, a list with one entry per prompt: [the id
    produced at that step], or [] for a row that has ended (the end id itself
    is not included). Stops when every row has ended or after max_new_tokens.

    Args:
        request: a `checks.Request` of greedy or sampling.
    """
    plan, settings = request.plan, request.settings
    new = settings["max_new_tokens"]
    ids, segs, pad_lengths, seed, options = request.tensors()
    carry, context, token, done = compiled(plan, settings, "prefill")(
        ids, segs, pad_lengths, seed, options
    )
    run_step = compiled(plan, settings, "step")
    options.pop("seen", None)  # the prefill's only
    step = 0
    while True:
        tokens, ended = ops.convert_to_numpy(token), ops.convert_to_numpy(done)
        step += 1
        if step < new and not ended.all():
            # Dispatched before the yield: on jax the next step runs while the
            # consumer handles this one's tokens.
            carry, token, done = run_step(
                ops.convert_to_tensor(step, "int32"), carry, context, seed, options
            )
        else:
            carry = token = done = None  # the caches go as soon as they can
        yield [[] if end else [int(t)] for t, end in zip(tokens.tolist(), ended, strict=True)]
        if token is None:
            return
