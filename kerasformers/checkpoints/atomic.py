"""Replacing checkpoint files so that a crash never leaves a loader with nothing.

A single file (safetensors) is written under a temporary name, flushed to disk, then
renamed over the old one: `os.replace` is atomic, so the old or the new file is there at
every instant.

A TensorFlow checkpoint is a pair (``P.index`` + ``P.data-*``) that no single rename can
swap. The invariant kept is: *an index file is only ever present with the data files it
describes*. The writer keeps the old pair complete under the backup prefix ``P.bak``
(its data hard-linked, then its index moved over in one rename) before the new data and
then the new index go in, and deletes the backup last; `detect_format` loads ``P.bak``
when ``P.index`` is missing. The steps, and what a loader finds after a crash in each:

=====================================================  =====================================
step                                                   complete pair after a crash there
=====================================================  =====================================
write ``P.index.tmp``, ``P.data-*.tmp``, fsync         old ``P``
link old ``P.data-*`` to ``P.bak.data-*``              old ``P``
move ``P.index`` to ``P.bak.index``                    old ``P.bak`` (``P`` has no index)
move the new data into place                           old ``P.bak``
move the new index into place                          new ``P`` (``P.bak`` ignored)
delete ``P.bak.index``, then ``P.bak.data-*``          new ``P``
=====================================================  =====================================
"""

from __future__ import annotations

import os
import shutil

__all__ = ["BACKUP_SUFFIX", "fsync_directory", "fsync_file", "link_or_copy", "replace_file"]

# The previous TensorFlow checkpoint of prefix P is kept as P + BACKUP_SUFFIX while a
# save replaces it (not matched by "*.index" alone: detection tells it apart).
BACKUP_SUFFIX = ".bak"


def fsync_file(path: str) -> None:
    """Flushes a written file's bytes to disk (before it is renamed into place)."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_directory(directory: str) -> None:
    """Makes the renames in a directory durable (POSIX; a no-op where unsupported)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_file(tmp: str, path: str) -> None:
    """Moves the fully written `tmp` over `path` in one atomic, durable step."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def link_or_copy(src: str, dst: str) -> None:
    """Gives `dst` the contents of `src` (a hard link; a copy where links are not allowed).

    `src` is left in place. A copy is written under a temporary name first, so `dst` is
    never a partial file.
    """
    if os.path.lexists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
        return
    except OSError:
        pass  # no hard links on this file system (FAT, some network mounts): copy
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    replace_file(tmp, dst)
