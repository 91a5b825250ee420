"""bert4keras' `open`: the builtin file, optionally indexable by line."""

import builtins
import json
import os

__all__ = ["open"]


class open:  # bert4keras' name: a drop-in for the builtin
    """bert4keras' `open`: the builtin file, optionally indexable by line.

    With `indexable=True` the line offsets are scanned once, then `f[i]` reads line
    `i` (with its newline) and `len(f)` is the number of lines, so a large file can
    be a `DataGenerator`'s data without loading it. `indexable` may also be a path:
    the offsets are cached there as JSON and reused when the file exists.

    Args:
        name, mode, encoding, errors: as the builtin `open`.
        indexable: False, True, or the path of the offsets cache.

    Example:
        >>> with open("train.txt", encoding="utf-8", indexable=True) as f:  # doctest: +SKIP
        ...     line = f[100]
    """

    def __init__(self, name, mode="r", encoding=None, errors="strict", indexable=False):
        self.name = name
        # The builtin refuses an `errors` argument in binary mode.
        text_errors = None if "b" in mode else errors
        self.file = builtins.open(name, mode, encoding=encoding, errors=text_errors)
        self.encoding = encoding
        self.errors = errors
        self.iterator = None
        if indexable:
            if isinstance(indexable, str) and os.path.exists(indexable):
                with builtins.open(indexable) as cache:
                    self.offsets = json.load(cache)
            else:
                self.create_indexes()
                if isinstance(indexable, str):
                    with builtins.open(indexable, "w") as cache:
                        json.dump(self.offsets, cache)

    def create_indexes(self):
        """Scans the file once for the offset of every line."""
        self.offsets, offset = [], 0
        while self.file.readline():
            self.offsets.append(offset)
            offset = self.file.tell()
        self.file.seek(0)

    def __getitem__(self, key):
        self.file.seek(self.offsets[key])
        return self.file.readline()

    def __len__(self):
        if not hasattr(self, "offsets"):
            raise TypeError("open: len() needs indexable=True")
        return len(self.offsets)

    def __iter__(self):
        if hasattr(self, "offsets"):
            for i in range(len(self)):
                yield self[i]
        else:
            yield from self.file

    def __next__(self):
        if self.iterator is None:
            self.iterator = self.__iter__()
        return next(self.iterator)

    next = __next__

    def read(self, *args):
        return self.file.read(*args)

    def readline(self):
        return self.file.readline()

    def readlines(self):
        return self.file.readlines()

    def write(self, text):
        return self.file.write(text)

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()

    def tell(self):
        return self.file.tell()

    def seek(self, offset=0):
        return self.file.seek(offset)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
