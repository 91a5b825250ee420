"""Saving over a checkpoint never destroys it: a crash at any step leaves the old or the
new weights loadable, complete. And a directory given as the save path round-trips."""

import os
import warnings

import numpy as np
import pytest

from kerasformers.checkpoints import (
    CheckpointError,
    detect_format,
    open_checkpoint,
    save_checkpoint,
)
from kerasformers.checkpoints.tf_bundle import write_tf_checkpoint

OLD = {
    "shared": np.arange(6, dtype=np.float32).reshape(2, 3),
    "old_only": np.full(5, 7, np.int64),
}
NEW = {
    "shared": -np.arange(12, dtype=np.float32).reshape(3, 4),
    "new_only": np.linspace(0, 1, 9, dtype=np.float64),
    "more": np.ones((2, 2), np.float16),
}


class _Killed(BaseException):
    """The process died: nothing after this runs, no cleanup either."""


# Every call the writers make that changes the file system (or makes it durable).
_STEPS = ("replace", "rename", "link", "remove", "unlink", "fsync")


def _install_kill(monkeypatch, after):
    """From the (after + 1)-th step on, every step raises: a kill at step `after`."""
    count = [0]
    for name in _STEPS:
        real = getattr(os, name)

        def step(*args, _real=real, **kwargs):
            count[0] += 1
            if after is not None and count[0] > after:
                raise _Killed(count[0])
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, step)
    return count


def _load(path):
    """{name: array} of everything at `path`, and the path detect_format resolved."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, resolved = detect_format(path)
        with open_checkpoint(path) as reader:
            tensors = {name: reader.get(name) for name in reader.names()}
    if resolved.endswith(".bak"):
        assert any("interrupted" in str(w.message) for w in caught), caught
    return tensors, resolved


def _which(tensors):
    for label, expected in (("old", OLD), ("new", NEW)):
        if set(tensors) == set(expected) and all(
            tensors[k].dtype == v.dtype and np.array_equal(tensors[k], v)
            for k, v in expected.items()
        ):
            return label
    raise AssertionError(f"neither the old nor the new checkpoint: {sorted(tensors)}")


def _count_steps(monkeypatch, save):
    with monkeypatch.context() as m:
        count = _install_kill(m, None)
        save()
    return count[0]


def _kill_everywhere(tmp_path, monkeypatch, save_old, save_new, load_paths):
    """Kills `save_new` at every step in turn; returns the outcome seen at each."""
    root = tmp_path
    total = None
    outcomes = []
    k = 0
    while total is None or k <= total:
        work = root / f"k{k}"
        work.mkdir()
        os.chdir(work)
        save_old()
        if total is None:
            total = _count_steps(monkeypatch, save_new)
            save_old()  # back to the old checkpoint for the k = 0 kill
        with monkeypatch.context() as m:
            _install_kill(m, k)
            try:
                save_new()
                killed = False
            except _Killed:
                killed = True
        assert killed == (k < total)
        seen = {_which(_load(path)[0]) for path in load_paths}
        assert len(seen) == 1, (k, seen)  # every way in reads the same checkpoint
        outcomes.append(seen.pop())
        # The next save recovers from whatever the kill left, and cleans up after it.
        save_new()
        assert all(_which(_load(path)[0]) == "new" for path in load_paths)
        leftovers = [n for n in os.listdir(work / "ckpt") if n.endswith((".bak", ".tmp"))]
        leftovers += [n for n in os.listdir(work / "ckpt") if ".bak." in n]
        assert not leftovers, (k, leftovers)
        k += 1
    return outcomes


@pytest.mark.parametrize(
    "old_shards, new_shards, hard_links",
    [(1, 1, True), (2, 1, True), (1, 3, True), (2, 1, False)],
)
@pytest.mark.parametrize("write_state", [True, False])
def test_tf_save_killed_at_every_step(
    tmp_path, monkeypatch, old_shards, new_shards, hard_links, write_state
):
    monkeypatch.chdir(tmp_path)
    if not hard_links:  # a file system without them: the backup's data is copied

        def no_link(src, dst):
            raise PermissionError(1, "Operation not permitted", src)

        monkeypatch.setattr(os, "link", no_link)

    def save(tensors, shards):
        return lambda: write_tf_checkpoint(
            tensors, "ckpt/model.ckpt", num_shards=shards, write_state=write_state
        )

    outcomes = _kill_everywhere(
        tmp_path,
        monkeypatch,
        save(OLD, old_shards),
        save(NEW, new_shards),
        ["ckpt/model.ckpt", "ckpt/model.ckpt.index", "ckpt"],
    )
    # Old until the new index is in, new from then on, never anything else.
    assert outcomes[0] == "old" and outcomes[-1] == "new"
    flip = outcomes.index("new")
    assert outcomes == ["old"] * flip + ["new"] * (len(outcomes) - flip)


def test_tf_save_killed_mid_replace_falls_back_to_backup_with_warning(tmp_path, monkeypatch):
    prefix = str(tmp_path / "model.ckpt")
    write_tf_checkpoint(OLD, prefix)
    replaced = []

    def replace(src, dst, _real=os.replace):
        if dst == prefix + ".index":
            raise _Killed  # the new data is in, its index is not
        replaced.append(dst)
        return _real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        write_tf_checkpoint(NEW, prefix)
    monkeypatch.undo()
    assert not os.path.exists(prefix + ".index")
    with pytest.warns(RuntimeWarning, match=r"model\.ckpt\.index is missing: loading .*bak"):
        assert detect_format(prefix) == ("tf", prefix + ".bak")
    assert _which(_load(prefix)[0]) == "old"
    assert _which(_load(tmp_path)[0]) == "old"


def test_safetensors_save_killed_at_every_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcomes = _kill_everywhere(
        tmp_path,
        monkeypatch,
        lambda: save_checkpoint(OLD, "ckpt/model.safetensors"),
        lambda: save_checkpoint(NEW, "ckpt/model.safetensors"),
        ["ckpt/model.safetensors", "ckpt"],
    )
    assert outcomes[0] == "old" and outcomes[-1] == "new"
    assert set(outcomes) == {"old", "new"}


def test_first_save_killed_leaves_nothing_half_visible(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        _install_kill(m, 0)
        with pytest.raises(_Killed):
            write_tf_checkpoint(NEW, str(tmp_path / "model.ckpt"))
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        detect_format(tmp_path)


# -- saving into a directory ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "format, given, expected",
    [
        ("tf", "out/", "out/model.ckpt"),
        (None, "out/", "out/model.ckpt"),
        ("safetensors", "out/", "out/model.safetensors"),
        ("tf", "existing", "existing/model.ckpt"),
        ("safetensors", "existing", "existing/model.safetensors"),
    ],
)
def test_save_into_directory_round_trips(tmp_path, monkeypatch, format, given, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    written = save_checkpoint(NEW, given, format=format)
    assert written == os.path.join(*expected.split("/"))
    assert not [n for n in os.listdir(os.path.dirname(written)) if n.startswith(".")]
    directory = os.path.dirname(written)
    fmt, resolved = detect_format(directory)
    assert (fmt, resolved) == (format or "tf", written)
    assert _which(_load(directory)[0]) == "new"
    # Saving into it again replaces the checkpoint, not adds a second one.
    save_checkpoint(OLD, given, format=format)
    assert _which(_load(directory)[0]) == "old"


def test_builder_saves_into_a_directory_and_loads_from_it(tmp_path):
    import keras

    from kerasformers.models import build_transformer_model

    config = dict(
        vocab_size=30,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=12,
        hidden_act="gelu",
        max_position=16,
    )
    builder = build_transformer_model(config, return_keras_model=False)
    ids = np.array([[2, 5, 7, 9]], "int32")
    inputs = [ids, np.zeros_like(ids)]
    expected = keras.ops.convert_to_numpy(builder.model(inputs))
    for format, name in (("tf", "model.ckpt"), ("safetensors", "model.safetensors")):
        directory = tmp_path / format
        written = builder.save_weights_as_checkpoint(str(directory) + os.sep, format=format)
        assert written == str(directory / name)
        model = build_transformer_model(config, str(directory))
        got = keras.ops.convert_to_numpy(model(inputs))
        np.testing.assert_allclose(got, expected, atol=1e-6)
