"""bert4keras' `DataGenerator` batch template, and a `keras.utils.PyDataset` bridge for it.

bert4keras trained with `model.fit(gen.forfit(), steps_per_epoch=len(gen))`; that still
works. `gen.to_pydataset()` adds what Keras 3 offers on top: index-based batches that
`fit` can build in worker threads or processes (`workers=`, `use_multiprocessing=`),
reproducible given a seed, reshuffled at every epoch. `check_inputs=model` checks
every batch against the model's embedding tables before the model sees it.
"""

import copy
import functools
import math

import keras
import numpy as np

from kerasformers.snippets.inputs import InputChecker

__all__ = ["DataGenerator", "DataGeneratorDataset"]


def _check_positive_int(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be an int >= 1, got {value!r}")


def _is_indexable(data):
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


def _model_inputs(batch):
    # Keras' reading of a batch: a tuple (or list) of 1 to 3 items is (x, y, sample_weight).
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        return batch[0]
    return batch


def _checked_batches(generator, batches):
    checker = generator._input_checker
    # A PyDataset view makes one batch: it carries the dataset's batch index.
    first = getattr(generator, "_batch_offset", 0)
    for index, batch in enumerate(batches, first):
        try:
            checker.check(_model_inputs(batch))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{type(generator).__name__}, batch {index}: {err}") from None
        yield batch


def _checking_iter(iter_batches):
    """Wraps a subclass' `__iter__` so that its batches pass `check_inputs` if asked."""

    @functools.wraps(iter_batches)
    def __iter__(self, *args, **kwargs):
        batches = iter_batches(self, *args, **kwargs)
        if getattr(self, "_input_checker", None) is None:
            return batches
        return _checked_batches(self, batches)

    __iter__._checks_inputs = True
    return __iter__


class DataGenerator:
    """Template for batch generators: subclass it and write `__iter__`.

    `__iter__(random)` walks `self.sample(random)`, which yields `(is_end, item)` with
    `is_end` True on the last item, and yields a batch whenever `batch_size` items
    are gathered or the data ends.

    Args:
        data: the examples: a list (or anything with `__len__` and `__getitem__`), or
            any iterable, e.g. a generator reading a large file.
        batch_size: number of examples per batch.
        buffer_size: size of the shuffle buffer used when `data` has no length
            (default `batch_size * 1000`); data with a length is fully permuted.
        check_inputs: optional keras.Model built by `build_transformer_model`. Every
            batch the generator yields (iterating it, `forfit`, `fortest`,
            `to_pydataset`) is then checked with `kerasformers.snippets.check_inputs`
            against the model's inputs, before it reaches the model: a token or
            segment id outside its embedding table (which jax turns into NaN
            silently) raises ValueError naming the input, the id, its row and
            column and the allowed range. The model inputs of a batch are its first
            item when it is a tuple or list of 1 to 3 items (`(x, y[, weights])`, as
            Keras reads it), else the whole batch. Only these host-side batches are
            checked: `model.fit(x, y)` on raw arrays is not.

    Raises:
        ValueError: if `batch_size` or `buffer_size` is not an int >= 1, or
            `check_inputs`' model has an id input without its embedding table.
        TypeError: if `check_inputs` is not a keras.Model.

    Example:
        >>> class Generator(DataGenerator):
        ...     def __iter__(self, random=False):
        ...         batch_x, batch_y = [], []
        ...         for is_end, (x, y) in self.sample(random):
        ...             batch_x.append(x)
        ...             batch_y.append(y)
        ...             if len(batch_x) == self.batch_size or is_end:
        ...                 yield np.array(batch_x), np.array(batch_y)
        ...                 batch_x, batch_y = [], []
        >>> gen = Generator([([0.0], 0), ([1.0], 1), ([2.0], 0)], batch_size=2)
        >>> len(gen), [len(x) for x, y in gen]
        (2, [2, 1])
        >>> # model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=3)
        >>> # model.fit(gen.to_pydataset(seed=0, workers=4), epochs=3)
        >>> # Generator(data, batch_size=32, check_inputs=model): ids checked per batch
    """

    def __init_subclass__(cls, **kwargs):
        # The user's own __iter__ makes the batches; wrapping it is the one place that
        # sees them all (direct iteration, forfit/fortest, the PyDataset bridge).
        super().__init_subclass__(**kwargs)
        own_iter = cls.__dict__.get("__iter__")
        if own_iter is not None and not getattr(own_iter, "_checks_inputs", False):
            cls.__iter__ = _checking_iter(own_iter)

    def __init__(self, data, batch_size=32, buffer_size=None, check_inputs=None):
        _check_positive_int("DataGenerator", "batch_size", batch_size)
        if buffer_size is not None:
            _check_positive_int("DataGenerator", "buffer_size", buffer_size)
        # Only the input names and table sizes are kept (not the model), so the
        # generator stays cheap to copy and to pickle into PyDataset workers.
        self._input_checker = None if check_inputs is None else InputChecker(check_inputs)
        self.data = data
        self.batch_size = batch_size
        if hasattr(data, "__len__"):
            self.steps = math.ceil(len(data) / batch_size)
        else:
            self.steps = None
        self.buffer_size = buffer_size or batch_size * 1000

    def __len__(self):
        if self.steps is None:
            raise TypeError(
                f"{type(self).__name__}: the data has no length (a generator?), so the "
                "number of batches is unknown; set `steps` or pass steps_per_epoch to fit"
            )
        return self.steps

    def _buffer_shuffled(self):
        # A sliding buffer: once full, each new item joins it and a random member leaves,
        # so output t comes from the first buffer_size + t + 1 items.
        buffer = []
        for item in self.data:
            buffer.append(item)
            if len(buffer) > self.buffer_size:
                yield self._pop_random(buffer)
        while buffer:
            yield self._pop_random(buffer)

    @staticmethod
    def _pop_random(buffer):
        i = np.random.randint(len(buffer))
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        return buffer.pop()

    def sample(self, random=False):
        """Yields `(is_end, item)` over the data, shuffled when `random` is True.

        Shuffling uses numpy's global RNG (seed it with `np.random.seed`, as in bert4keras):
        a full permutation for data with a length, a shuffle buffer otherwise.
        """
        if not random:
            items = iter(self.data)
        elif _is_indexable(self.data):
            items = (self.data[i] for i in np.random.permutation(len(self.data)))
        else:
            items = self._buffer_shuffled()
        # Look one item ahead so that the last one can carry is_end=True.
        try:
            current = next(items)
        except StopIteration:
            return
        for upcoming in items:
            yield False, current
            current = upcoming
        yield True, current

    def __iter__(self, random=False):
        raise NotImplementedError(
            f"{type(self).__name__} must define __iter__(self, random=False) yielding "
            "batches (see the DataGenerator docstring)"
        )

    def forfit(self, random=True):
        """Loops over the batches for ever (for `fit(..., steps_per_epoch=len(gen))`)."""
        while True:
            count = 0
            for batch in self.__iter__(random):
                count += 1
                yield batch
            if count == 0:
                raise ValueError(f"{type(self).__name__} yielded no batch (empty data?)")

    def fortest(self, random=False):
        """Loops over the inputs of each batch (its first element) for ever."""
        for batch in self.forfit(random):
            yield batch[0]

    def to_pydataset(
        self, random=True, seed=None, workers=1, use_multiprocessing=False, max_queue_size=10
    ):
        """Wraps the generator as a `keras.utils.PyDataset` (see `DataGeneratorDataset`)."""
        return DataGeneratorDataset(
            self,
            random=random,
            seed=seed,
            workers=workers,
            use_multiprocessing=use_multiprocessing,
            max_queue_size=max_queue_size,
        )


class DataGeneratorDataset(keras.utils.PyDataset):
    """A `DataGenerator` served batch by batch to `model.fit` as a Keras `PyDataset`.

    Batch `i` of an epoch holds items `order[i * batch_size:(i + 1) * batch_size]` of the
    generator's data, where `order` is a permutation drawn from `(seed, epoch)` (or the
    natural order when `random` is False); it is built by running the generator's own
    `__iter__` on just those items, which must give exactly one batch. The epoch count
    advances in `on_epoch_end`, so every epoch is reshuffled, and two datasets with the
    same seed give the same batches. (`fit` reads one batch to build the model and then
    calls `on_epoch_end`, so its first epoch uses the order of epoch 1. Its
    `shuffle=True` also reorders whole batches with Python's `random`: pass
    `shuffle=False`, or seed with `keras.utils.set_random_seed`, for a fully
    reproducible run.)

    Args:
        generator: a `DataGenerator` whose data has `__len__` and `__getitem__`.
        random: shuffle the items every epoch; also passed to the generator's
            `__iter__`, which may use it for augmentation.
        seed: seed of the epoch permutations; None draws one from numpy's global RNG.
        workers, use_multiprocessing, max_queue_size: as `keras.utils.PyDataset`.

    Example:
        >>> dataset = gen.to_pydataset(seed=42, workers=2)  # doctest: +SKIP
        >>> model.fit(dataset, epochs=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        generator,
        random=True,
        seed=None,
        workers=1,
        use_multiprocessing=False,
        max_queue_size=10,
    ):
        super().__init__(
            workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size
        )
        if not isinstance(generator, DataGenerator):
            raise TypeError(
                f"DataGeneratorDataset: generator must be a DataGenerator, got "
                f"{type(generator).__name__}"
            )
        if not _is_indexable(generator.data):
            raise TypeError(
                "DataGeneratorDataset: the generator's data must have __len__ and "
                f"__getitem__ (a list), got {type(generator.data).__name__}; for a stream "
                "use fit(gen.forfit(), steps_per_epoch=...) instead"
            )
        self.generator = generator
        self.random = random
        self.seed = int(np.random.randint(2**31)) if seed is None else int(seed)
        self.epoch = 0
        self._order_cache = (None, None)

    def __len__(self):
        return math.ceil(len(self.generator.data) / self.generator.batch_size)

    def _order(self):
        epoch, order = self._order_cache
        if epoch != self.epoch:
            size = len(self.generator.data)
            if self.random:
                order = np.random.default_rng([self.seed, self.epoch]).permutation(size)
            else:
                order = np.arange(size)
            self._order_cache = (self.epoch, order)
        return order

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"DataGeneratorDataset: batch {index} of {len(self)}")
        size = self.generator.batch_size
        ids = self._order()[index * size : (index + 1) * size]
        view = copy.copy(self.generator)
        view.data = [self.generator.data[i] for i in ids]
        view.steps = 1
        view._batch_offset = index
        generator_type = type(self.generator)

        def in_order(random=False):
            # The items are already in this epoch's order; any reshuffle would make
            # batches depend on numpy's global (thread-shared) RNG.
            return generator_type.sample(view, False)

        view.sample = in_order
        batches = list(view.__iter__(self.random))
        if len(batches) != 1:
            raise ValueError(
                f"DataGeneratorDataset: {type(self.generator).__name__}.__iter__ made "
                f"{len(batches)} batches from {len(ids)} items (batch_size={size}); it "
                "must make exactly one, e.g. yield when len(batch) == batch_size or is_end"
            )
        return batches[0]

    def on_epoch_end(self):
        self.epoch += 1
