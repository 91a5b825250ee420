"""Streaming batches from shard files, with a resumable data position.

One shard is in memory at a time. The order is a pure function of
`(seed, epoch)`: shards are visited in a seeded permutation and the instances
of a shard in another one; every instance is masked with its own generator
seeded by `(seed, epoch, shard, line)`. A position `{"epoch", "shard",
"offset"}` therefore pins the rest of the stream exactly, and each rank of a
data-parallel job builds only its own rows of the same global batch.
"""

import numpy as np

from kerasformers.pretraining.corpus import read_shard, shard_files
from kerasformers.pretraining.samples import collate

START = {"epoch": 0, "shard": 0, "offset": 0}


def _check_position(position, num_shards):
    if not isinstance(position, dict) or set(position) != set(START):
        raise ValueError(f"a data position is a dict with keys {sorted(START)}, got {position!r}")
    if not 0 <= position["shard"] <= num_shards or position["epoch"] < 0:
        raise ValueError(f"data position {position} is outside {num_shards} shard(s)")
    return dict(position)


class ShardedDataset:
    """Global batches from shard files, as an endless, resumable stream.

    Args:
        shards: a directory of `*.jsonl` shards, a glob pattern or a list of files.
        builder: a sample builder (`MLMSampleBuilder`, ...); its `maxlen` is the
            fixed sequence length of every batch.
        batch_size: the *global* batch size.
        seed: seeds the shard/instance order and the masking.
        shuffle: False visits shards and instances in file order (evaluation).
        rank, world_size: this process' slice of each global batch (rows
            `rank * b : (rank + 1) * b`, `b = batch_size // world_size`).

    Example:
        >>> data = ShardedDataset("shards/", MLMSampleBuilder(vocab, 128), 32)
        >>> for (x, y, w), position in data.batches():
        ...     model.train_on_batch(x, y, sample_weight=w)
    """

    def __init__(self, shards, builder, batch_size, seed=0, shuffle=True, rank=0, world_size=1):
        self.files = list(shards) if isinstance(shards, (list, tuple)) else shard_files(shards)
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} must be a positive multiple of world_size {world_size}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.builder = builder
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.local_batch_size = batch_size // world_size

    def shard_order(self, epoch):
        if not self.shuffle:
            return np.arange(len(self.files))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.files))

    def _instance_order(self, epoch, shard_id, count):
        if not self.shuffle:
            return np.arange(count)
        return np.random.default_rng([self.seed, epoch, shard_id, 1]).permutation(count)

    def instances(self, position=None, epochs=None):
        """Yields `(epoch, shard_id, line, (ids, word_starts), next_position)`
        from `position` on; `epochs` limits the pass count (None: endless)."""
        position = _check_position(position or START, len(self.files))
        epoch, index, offset = position["epoch"], position["shard"], position["offset"]
        while epochs is None or epoch < epochs:
            order = self.shard_order(epoch)
            while index < len(order):
                shard_id = int(order[index])
                lines = read_shard(self.files[shard_id])
                perm = self._instance_order(epoch, shard_id, len(lines))
                for k in range(offset, len(lines)):
                    if k + 1 < len(lines):
                        after = {"epoch": epoch, "shard": index, "offset": k + 1}
                    elif index + 1 < len(order):
                        after = {"epoch": epoch, "shard": index + 1, "offset": 0}
                    else:
                        after = {"epoch": epoch + 1, "shard": 0, "offset": 0}
                    line = int(perm[k])
                    yield epoch, shard_id, line, lines[line], after
                index, offset = index + 1, 0
            epoch, index = epoch + 1, 0

    def _sample(self, epoch, shard_id, line, instance):
        rng = np.random.default_rng([self.seed, epoch, shard_id, line])
        return self.builder(instance[0], instance[1], rng)

    def batches(self, position=None, epochs=None, pad_last=False):
        """Yields `((x, y, sample_weight), next_position)` for this rank.

        Args:
            position: where to start (a position yielded earlier, or None).
            epochs: stop after this many passes (None: endless).
            pad_last: give a final partial global batch, filled with rows of
                weight 0 (evaluation); otherwise it is dropped.
        """
        lo = self.rank * self.local_batch_size
        hi = lo + self.local_batch_size
        rows, after = [], None
        for epoch, shard_id, line, instance, after in self.instances(position, epochs):
            rows.append((epoch, shard_id, line, instance))
            if len(rows) == self.batch_size:
                yield self._collate(rows[lo:hi]), after
                rows = []
        if rows and pad_last:
            mine = rows[lo:hi]
            yield self._collate(mine, self.local_batch_size - len(mine)), after

    def _collate(self, rows, empty=0):
        samples = [self._sample(*row) for row in rows]
        samples += [self.builder.empty() for _ in range(empty)]
        return collate(samples, self.builder.maxlen, self.builder.pad_id)
