"""kerasformers.snippets.DataGenerator: batching, shuffling, the PyDataset bridge, fit."""

import itertools
import math
import threading

import keras
import numpy as np
import pytest

from kerasformers.snippets import DataGenerator, DataGeneratorDataset


class _Generator(DataGenerator):
    """The usual bert4keras subclass: batches of (x, y) arrays."""

    def __iter__(self, random=False):
        batch_x, batch_y = [], []
        for is_end, (x, y) in self.sample(random):
            batch_x.append(x)
            batch_y.append(y)
            if len(batch_x) == self.batch_size or is_end:
                yield np.array(batch_x), np.array(batch_y)
                batch_x, batch_y = [], []


def _items(n):
    # Item i carries its own id in x[0] so batches can be traced back to the data.
    return [(np.array([float(i), 1.0]), float(i)) for i in range(n)]


def _ids(batch):
    return [int(v) for v in batch[0][:, 0]]


def test_data_generator_steps_and_last_partial_batch():
    for n, batch_size in [(1, 4), (7, 4), (8, 4), (9, 4), (10, 3)]:
        gen = _Generator(_items(n), batch_size=batch_size)
        assert len(gen) == math.ceil(n / batch_size)
        sizes = [len(b[0]) for b in gen]
        want = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        assert sizes == want
        assert sum((_ids(b) for b in gen), []) == list(range(n))
    assert _Generator(_items(5), batch_size=2).buffer_size == 2000


def test_data_generator_sample_flags_and_shuffles():
    gen = _Generator(list(range(6)), batch_size=4)
    assert list(gen.sample()) == [(False, i) for i in range(5)] + [(True, 5)]
    np.random.seed(0)
    shuffled = [d for _, d in gen.sample(random=True)]
    assert sorted(shuffled) == list(range(6)) and shuffled != list(range(6))
    assert list(_Generator([], batch_size=2).sample(random=True)) == []


def test_data_generator_buffer_shuffle_covers_every_item_once():
    n, buffer_size = 200, 16
    gen = _Generator((i for i in range(n)), batch_size=4, buffer_size=buffer_size)
    assert gen.steps is None
    with pytest.raises(TypeError, match="has no length"):
        len(gen)
    np.random.seed(1)
    flags, order = zip(*gen.sample(random=True), strict=True)
    assert sorted(order) == list(range(n)) and list(order) != list(range(n))
    assert flags[-1] and not any(flags[:-1])
    # Output t is drawn from the first buffer_size + t + 1 items of the stream.
    assert all(item <= buffer_size + t for t, item in enumerate(order))


def test_data_generator_forfit_fortest_and_errors():
    gen = _Generator(_items(5), batch_size=2)
    batches = list(itertools.islice(gen.forfit(), 3 * len(gen)))
    ids = sum((_ids(b) for b in batches), [])
    for epoch in range(3):
        assert sorted(ids[epoch * 5 : (epoch + 1) * 5]) == list(range(5))
    inputs = list(itertools.islice(gen.fortest(), 2))
    assert [x[:, 0].tolist() for x in inputs] == [[0.0, 1.0], [2.0, 3.0]]
    with pytest.raises(ValueError, match="yielded no batch"):
        next(_Generator([], batch_size=2).forfit())
    with pytest.raises(NotImplementedError, match=r"must define __iter__\(self, random=False\)"):
        list(DataGenerator([1, 2]))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        DataGenerator([1], batch_size=0)


def test_pydataset_batches_are_seeded_and_reshuffled_per_epoch():
    gen = _Generator(_items(10), batch_size=4)
    first, twin = gen.to_pydataset(seed=3), DataGeneratorDataset(gen, seed=3)
    assert isinstance(first, keras.utils.PyDataset) and len(first) == 3

    def epoch(dataset):
        return [_ids(dataset[i]) for i in range(len(dataset))]

    one = epoch(first)
    assert [len(b) for b in one] == [4, 4, 2]
    assert sorted(sum(one, [])) == list(range(10)) and sum(one, []) != list(range(10))
    assert epoch(twin) == one
    for dataset in (first, twin):
        dataset.on_epoch_end()
    two = epoch(first)
    assert sorted(sum(two, [])) == list(range(10)) and two != one and epoch(twin) == two
    # The permutation is numpy's default_rng((seed, epoch)).
    want = np.random.default_rng([3, 1]).permutation(10).tolist()
    assert sum(two, []) == want
    assert epoch(gen.to_pydataset(random=False)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_pydataset_errors():
    gen = _Generator(_items(3), batch_size=2)
    with pytest.raises(IndexError, match="batch 2 of 2"):
        gen.to_pydataset()[2]
    with pytest.raises(TypeError, match="must have __len__ and __getitem__"):
        _Generator(iter(_items(3))).to_pydataset()
    with pytest.raises(TypeError, match="generator must be a DataGenerator"):
        DataGeneratorDataset([1, 2])

    class PerItem(DataGenerator):
        def __iter__(self, random=False):
            for _, (x, y) in self.sample(random):
                yield x[None], np.array([y])

    with pytest.raises(ValueError, match="made 2 batches from 2 items"):
        PerItem(_items(3), batch_size=2).to_pydataset()[0]


def _tiny_regression(n=48):
    rng = np.random.default_rng(7)
    w = np.array([[1.5], [-2.0], [0.5]])
    x = rng.normal(size=(n, 3))
    return [(x[i], (x[i] @ w)[0]) for i in range(n)]


def _fit(dataset, epochs=4):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    history = model.fit(dataset, epochs=epochs, verbose=0, shuffle=False)
    return history.history["loss"]


def test_pydataset_drives_fit_with_worker_threads():
    seen, lock = {}, threading.Lock()

    class Recording(DataGeneratorDataset):
        def __getitem__(self, index):
            x, y = super().__getitem__(index)
            with lock:
                seen.setdefault(self.epoch, []).extend(_ids((x, y)))
            # Column 0 is the example id; the model sees the rest.
            return x[:, 1:].astype("float32"), y.astype("float32")

    n, epochs = 48, 4
    data = [(np.array([float(i), *x]), y) for i, (x, y) in enumerate(_tiny_regression(n))]
    losses = _fit(Recording(_Generator(data, batch_size=10), seed=0, workers=2), epochs)
    assert losses[-1] < 0.5 * losses[0]
    # Keras reads a batch to build the model, then calls on_epoch_end: training runs
    # on the last `epochs` permutations, each holding every example exactly once.
    for epoch in sorted(seen)[-epochs:]:
        assert sorted(seen[epoch]) == list(range(n))


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # Keras forks; JAX warns
def test_pydataset_drives_fit_with_worker_processes():
    gen = _Generator(_tiny_regression(), batch_size=10)
    losses = _fit(gen.to_pydataset(seed=0, workers=2, use_multiprocessing=True), epochs=3)
    assert losses[-1] < 0.5 * losses[0]


def test_forfit_drives_fit():
    gen = _Generator(_tiny_regression(), batch_size=10)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=3, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 3
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
