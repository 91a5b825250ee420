"""TensorFlow checkpoints: reading TF-written fixtures, byte-identical writing, damaged files."""

import filecmp
import importlib.util
import os
import random
import shutil
import struct
import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from kerasformers.checkpoints import CheckpointError, MissingTensorError, open_checkpoint
from kerasformers.checkpoints.crc import crc32c, mask
from kerasformers.checkpoints.sstable import (
    TableWriter,
    field_bytes,
    field_varint,
    iter_block,
    read_table,
)
from kerasformers.checkpoints.tf_bundle import (
    TFCheckpointReader,
    _entry_proto,
    write_tf_checkpoint,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "tf_written"
BERT = DATA / "tiny_bert" / "bert_model.ckpt"
ALBERT = DATA / "tiny_albert" / "albert_model.ckpt"
MIXED = DATA / "mixed_dtypes" / "mixed.ckpt"
SUFFIXES = (".index", ".data-00000-of-00001")


def _load_mixed_tensors():
    spec = importlib.util.spec_from_file_location(
        "make_mixed_dtypes", DATA / "mixed_dtypes" / "make_mixed_dtypes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mixed_tensors


mixed_tensors = _load_mixed_tensors()


def _bert_shapes(hidden=48, layers=3, inter=100, vocab=333, positions=64):
    shapes = {
        "bert/embeddings/LayerNorm/beta": (hidden,),
        "bert/embeddings/LayerNorm/gamma": (hidden,),
        "bert/embeddings/position_embeddings": (positions, hidden),
        "bert/embeddings/token_type_embeddings": (2, hidden),
        "bert/embeddings/word_embeddings": (vocab, hidden),
        "bert/pooler/dense/bias": (hidden,),
        "bert/pooler/dense/kernel": (hidden, hidden),
        "cls/predictions/output_bias": (vocab,),
        "cls/predictions/transform/LayerNorm/beta": (hidden,),
        "cls/predictions/transform/LayerNorm/gamma": (hidden,),
        "cls/predictions/transform/dense/bias": (hidden,),
        "cls/predictions/transform/dense/kernel": (hidden, hidden),
        "cls/seq_relationship/output_bias": (2,),
        "cls/seq_relationship/output_weights": (2, hidden),
    }
    for i in range(layers):
        p = f"bert/encoder/layer_{i}/"
        for part in ("query", "key", "value"):
            shapes[f"{p}attention/self/{part}/kernel"] = (hidden, hidden)
            shapes[f"{p}attention/self/{part}/bias"] = (hidden,)
        shapes[f"{p}attention/output/dense/kernel"] = (hidden, hidden)
        shapes[f"{p}attention/output/dense/bias"] = (hidden,)
        shapes[f"{p}intermediate/dense/kernel"] = (hidden, inter)
        shapes[f"{p}intermediate/dense/bias"] = (inter,)
        shapes[f"{p}output/dense/kernel"] = (inter, hidden)
        shapes[f"{p}output/dense/bias"] = (hidden,)
        for ln in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{p}{ln}/beta"] = (hidden,)
            shapes[f"{p}{ln}/gamma"] = (hidden,)
    return shapes


def _albert_shapes(hidden=48, embed=20, inter=100, vocab=333, positions=64):
    g = "bert/encoder/transformer/group_0/inner_group_0/"
    shapes = {
        "bert/embeddings/LayerNorm/beta": (embed,),
        "bert/embeddings/LayerNorm/gamma": (embed,),
        "bert/embeddings/position_embeddings": (positions, embed),
        "bert/embeddings/token_type_embeddings": (2, embed),
        "bert/embeddings/word_embeddings": (vocab, embed),
        "bert/encoder/embedding_hidden_mapping_in/bias": (hidden,),
        "bert/encoder/embedding_hidden_mapping_in/kernel": (embed, hidden),
        "bert/pooler/dense/bias": (hidden,),
        "bert/pooler/dense/kernel": (hidden, hidden),
        "cls/predictions/output_bias": (vocab,),
        "cls/predictions/transform/LayerNorm/beta": (embed,),
        "cls/predictions/transform/LayerNorm/gamma": (embed,),
        "cls/predictions/transform/dense/bias": (embed,),
        "cls/predictions/transform/dense/kernel": (hidden, embed),
        "cls/seq_relationship/output_bias": (2,),
        "cls/seq_relationship/output_weights": (2, hidden),
        g + "LayerNorm/beta": (hidden,),
        g + "LayerNorm/gamma": (hidden,),
        g + "LayerNorm_1/beta": (hidden,),
        g + "LayerNorm_1/gamma": (hidden,),
        g + "attention_1/output/dense/bias": (hidden,),
        g + "attention_1/output/dense/kernel": (hidden, hidden),
        g + "ffn_1/intermediate/dense/bias": (inter,),
        g + "ffn_1/intermediate/dense/kernel": (hidden, inter),
        g + "ffn_1/intermediate/output/dense/bias": (hidden,),
        g + "ffn_1/intermediate/output/dense/kernel": (inter, hidden),
    }
    for part in ("query", "key", "value"):
        shapes[f"{g}attention_1/self/{part}/kernel"] = (hidden, hidden)
        shapes[f"{g}attention_1/self/{part}/bias"] = (hidden,)
    return shapes


def _same(a, b):
    if a.dtype == object or b.dtype == object:
        return a.shape == b.shape and list(a.reshape(-1)) == list(b.reshape(-1))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _copy_ckpt(src: Path, dst_dir: Path) -> str:
    dst_dir.mkdir(parents=True, exist_ok=True)
    for suffix in SUFFIXES:
        shutil.copy(str(src) + suffix, dst_dir / (src.name + suffix))
    return str(dst_dir / src.name)


def _write_index(path, entries, header=None):
    """Writes a (possibly hostile) index with valid block checksums."""
    if header is None:
        header = field_varint(1, 1) + field_bytes(3, field_varint(1, 1))
    with open(path, "wb") as f:
        table = TableWriter(f)
        table.add(b"", header)
        for key, value in sorted(entries):
            table.add(key, value)
        table.finish()


# -- the TensorFlow-written fixtures ------------------------------------------------------------
@pytest.mark.parametrize("prefix, shapes", [(BERT, _bert_shapes()), (ALBERT, _albert_shapes())])
def test_reads_tf_written_fixture(prefix, shapes):
    with open_checkpoint(prefix) as reader:
        assert reader.format == "tf"
        assert reader.path == str(prefix)
        assert reader.names() == sorted(shapes)
        assert len(reader) == len(shapes) and not reader.skipped
        for name, shape in shapes.items():
            assert reader.shape(name) == shape
            assert reader.dtype(name) == np.float32
            value = reader.get(name)  # checksum verified
            assert value.shape == shape and value.dtype == np.float32
            assert np.isfinite(value).all() and value.flags.writeable
        gammas = [reader.get(n) for n in shapes if n.endswith("gamma")]
        assert all(0.5 <= g.min() and g.max() <= 1.5 for g in gammas)
        assert "bert/embeddings/word_embeddings" in reader
        assert reader.shape("bert/embeddings/word_embeddings") == (
            333,
            48 if prefix == BERT else 20,
        )


def test_word_embeddings_entry():
    with open_checkpoint(BERT) as reader:
        assert reader.shape("bert/embeddings/word_embeddings") == (333, 48)
        assert reader.dtype("bert/embeddings/word_embeddings") == np.dtype("float32")


@pytest.mark.parametrize("prefix", [BERT, ALBERT])
def test_roundtrip_is_byte_identical_to_tensorflow(prefix, tmp_path):
    with open_checkpoint(prefix) as reader:
        tensors = {name: reader.get(name) for name in reader.names()}
    out = write_tf_checkpoint(tensors, tmp_path / prefix.name)
    for suffix in SUFFIXES:
        assert filecmp.cmp(out + suffix, str(prefix) + suffix, shallow=False), suffix
    state = (tmp_path / "checkpoint").read_text()
    assert state == (
        f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n'
    )


def test_reads_tf_written_mixed_dtypes_two_shards():
    expected = mixed_tensors()
    with open_checkpoint(MIXED) as reader:
        assert reader.num_shards == 2
        assert reader.names() == sorted(expected) and not reader.skipped
        for name, value in expected.items():
            assert reader.shape(name) == value.shape
            assert reader.dtype(name) == value.dtype
            assert _same(reader.get(name), value), name
    assert ml_dtypes.bfloat16 == expected["bf16"].dtype


def test_writer_reproduces_tf_mixed_dtypes_byte_for_byte(tmp_path):
    out = write_tf_checkpoint(mixed_tensors(), tmp_path / "mixed.ckpt", num_shards=2)
    for suffix in (".index", ".data-00000-of-00002", ".data-00001-of-00002"):
        assert filecmp.cmp(out + suffix, str(MIXED) + suffix, shallow=False), suffix


# -- writing and reading back -------------------------------------------------------------------
def test_roundtrip_odd_tensors(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "a/float32": rng.standard_normal((3, 5, 7)).astype(np.float32),
        "b/big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "c/non_contiguous": np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2],
        "d/bfloat16": rng.standard_normal(9).astype(ml_dtypes.bfloat16),
        "e/scalar": np.float16(1.5),
        "f/empty": np.zeros((3, 0, 2), np.int64),
        "g/text": np.array(["caf\u00e9", "", "x"], dtype=object),
        "h/list": [[1.0, 2.0]],
        "i/fp8": np.linspace(-2, 2, 5).astype(ml_dtypes.float8_e4m3fn),
    }
    prefix = write_tf_checkpoint(tensors, tmp_path / "sub" / "model.ckpt", num_shards=3)
    with TFCheckpointReader(prefix) as reader:
        assert reader.names() == sorted(tensors)
        for name, value in tensors.items():
            want = np.asarray(value)
            got = reader.get(name)
            if want.dtype == object:
                assert list(got) == [s.encode() for s in want]
                continue
            assert got.dtype == want.dtype.newbyteorder("=") and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_multi_block_index(tmp_path):
    tensors = {f"scope_{i:04d}/" + "w" * 120: np.full((2,), i, np.int32) for i in range(2500)}
    prefix = write_tf_checkpoint(tensors, tmp_path / "many.ckpt")
    data = (tmp_path / "many.ckpt.index").read_bytes()
    assert len(list(read_table(data))) == 2501
    # More than one data block, i.e. the separator keys were exercised.
    assert len(data) > 262144
    with TFCheckpointReader(prefix) as reader:
        assert len(reader) == 2500
        assert reader.get(f"scope_1234/{'w' * 120}")[0] == 1234


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(CheckpointError, match=r"tensor 'x' of dtype datetime64.*model\.ckpt"):
        write_tf_checkpoint({"x": np.zeros(2, "datetime64[s]")}, tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match="invalid tensor name ''"):
        write_tf_checkpoint({"": np.zeros(2)}, tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match="object arrays must hold bytes or str"):
        write_tf_checkpoint({"o": np.array([1, None], dtype=object)}, tmp_path / "model.ckpt")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_missing_tensor_and_closed_reader():
    reader = open_checkpoint(BERT)
    with pytest.raises(MissingTensorError, match="close matches: bert/embeddings/word_embeddings"):
        reader.get("bert/embeddings/word_embedding")
    with pytest.raises(KeyError):
        reader.shape("nope")
    reader.close()
    with pytest.raises(CheckpointError, match="closed"):
        reader.get("bert/embeddings/word_embeddings")


# -- damaged and hostile files ------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0, 10, 47, 48, 700, -1])
def test_truncated_index(tmp_path, keep):
    prefix = _copy_ckpt(ALBERT, tmp_path)
    index = Path(prefix + ".index")
    data = index.read_bytes()
    index.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(CheckpointError, match=r"albert_model\.ckpt\.index"):
        open_checkpoint(prefix)


def test_bad_magic(tmp_path):
    prefix = _copy_ckpt(BERT, tmp_path)
    index = Path(prefix + ".index")
    data = bytearray(index.read_bytes())
    data[-1] ^= 0xFF
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"bert_model\.ckpt\.index.*bad magic"):
        open_checkpoint(prefix)


def test_flipped_byte_in_index_block(tmp_path):
    prefix = _copy_ckpt(BERT, tmp_path)
    index = Path(prefix + ".index")
    data = bytearray(index.read_bytes())
    data[100] ^= 0x01
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"bert_model\.ckpt\.index.*checksum mismatch"):
        open_checkpoint(prefix)


def test_truncated_data_file(tmp_path):
    prefix = _copy_ckpt(BERT, tmp_path)
    data = Path(prefix + ".data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:-10])
    # The last tensor in the data file (sorted order) no longer fits: caught when opening.
    with pytest.raises(
        CheckpointError,
        match=r"cls/seq_relationship/output_weights.*beyond the end of .*data-00000-of-00001",
    ):
        open_checkpoint(prefix)


def test_data_file_truncated_after_open(tmp_path):
    prefix = _copy_ckpt(BERT, tmp_path)
    reader = open_checkpoint(prefix)
    data = Path(prefix + ".data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"data-00000-of-00001 is truncated.*word_embeddings"):
        reader.get("bert/embeddings/word_embeddings")
    reader.close()


def test_missing_data_file(tmp_path):
    prefix = _copy_ckpt(BERT, tmp_path)
    os.remove(prefix + ".data-00000-of-00001")
    with pytest.raises(CheckpointError, match=r"data file .*data-00000-of-00001 is missing"):
        open_checkpoint(prefix)


def test_flipped_byte_in_data_names_the_tensor(tmp_path):
    prefix = _copy_ckpt(BERT, tmp_path)
    name = "bert/encoder/layer_1/attention/self/key/kernel"
    with open_checkpoint(prefix) as reader:
        entry = reader._entries[name]
        good = reader.get("bert/embeddings/word_embeddings")
    path = Path(prefix + ".data-00000-of-00001")
    data = bytearray(path.read_bytes())
    data[entry.offset + entry.size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with open_checkpoint(prefix) as reader:
        assert reader.shape(name) == (48, 48)  # metadata needs no data
        with pytest.raises(
            CheckpointError, match=f"checksum mismatch for tensor '{name}' in .*data"
        ):
            reader.get(name)
        np.testing.assert_array_equal(reader.get("bert/embeddings/word_embeddings"), good)


def _hostile(tmp_path, entries, data_size=16, header=None):
    prefix = str(tmp_path / "evil.ckpt")
    Path(prefix + ".data-00000-of-00001").write_bytes(b"\x00" * data_size)
    _write_index(prefix + ".index", entries, header)
    return prefix


def test_giant_shape_is_rejected_without_allocating(tmp_path):
    crc = mask(crc32c(b"\x00" * 16))
    cases = {
        # Consistent size, but far beyond the data file.
        b"giant": _entry_proto(1, (2**20, 2**20), 0, 0, 4 * 2**40, crc),
        # Shape and size disagree.
        b"liar": _entry_proto(1, (2**40,), 0, 0, 16, crc),
    }
    tracemalloc.start()
    try:
        for key, proto in cases.items():
            prefix = _hostile(tmp_path, [(key, proto)])
            with pytest.raises(CheckpointError, match=f"evil.ckpt.index.*tensor '{key.decode()}'"):
                open_checkpoint(prefix)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**22


@pytest.mark.parametrize(
    "proto, message",
    [
        (_entry_proto(1, (4,), 1, 0, 16, 0), "shard id 1"),
        (_entry_proto(0, (4,), 0, 0, 16, 0), "invalid dtype enum 0"),
        (_entry_proto(101, (4,), 0, 0, 16, 0), "invalid dtype enum 101"),
        (_entry_proto(1, (4,), 0, 8, 16, 0), "beyond the end"),
        (field_varint(1, 1) + b"\x12\x05\x12\x03\x08\xff\xff", "varint"),
        (
            field_varint(1, 1) + field_bytes(2, field_bytes(2, field_varint(1, 2**64 - 1))),
            "negative",
        ),
        (field_varint(1, 1) + b"\x2a\x7f", "runs past the end"),
        (field_varint(1, 7) + field_bytes(2, field_bytes(2, field_varint(1, 20))), "strings"),
    ],
)
def test_invalid_entries(tmp_path, proto, message):
    prefix = _hostile(tmp_path, [(b"t", proto)])
    with pytest.raises(CheckpointError, match=f"evil.ckpt.index.*'t'.*{message}"):
        open_checkpoint(prefix)


def test_unreadable_entries_are_skipped_not_fatal(tmp_path):
    crc = mask(crc32c(b"\x00" * 16))
    entries = [
        (b"ok", _entry_proto(1, (4,), 0, 0, 16, crc)),
        (b"variant", _entry_proto(21, (), 0, 0, 0, 0)),
        (b"partitioned", _entry_proto(1, (4,), 0, 0, 0, 0) + field_bytes(7, b"")),
        (b"\x00slice", _entry_proto(1, (4,), 0, 0, 16, crc)),
        (b"\xffbinary", _entry_proto(1, (4,), 0, 0, 16, crc)),
        (b"future", _entry_proto(77, (4,), 0, 0, 16, crc)),
    ]
    with open_checkpoint(_hostile(tmp_path, entries)) as reader:
        assert reader.names() == ["ok"]
        assert set(reader.skipped) == {
            "variant",
            "partitioned",
            "'\\x00slice'",
            "\\xffbinary",
            "future",
        }
        assert "variant" in reader.skipped["variant"]
        assert "partitioned" in reader.skipped["partitioned"]
        with pytest.raises(MissingTensorError, match="cannot be read: TensorFlow dtype variant"):
            reader.get("variant")
        np.testing.assert_array_equal(reader.get("ok"), np.zeros(4, np.float32))


def test_header_checks(tmp_path):
    crc = mask(crc32c(b"\x00" * 16))
    entry = [(b"x", _entry_proto(1, (4,), 0, 0, 16, crc))]
    newer = field_varint(1, 1) + field_bytes(3, field_varint(1, 5) + field_varint(2, 3))
    with pytest.raises(CheckpointError, match="evil.ckpt.index.*newer TensorFlow"):
        open_checkpoint(_hostile(tmp_path, entry, header=newer))
    with pytest.raises(CheckpointError, match="evil.ckpt.index.*number of shards"):
        open_checkpoint(_hostile(tmp_path, entry, header=field_varint(1, 0)))
    prefix = str(tmp_path / "nohdr.ckpt")
    with open(prefix + ".index", "wb") as f:
        table = TableWriter(f)
        table.add(b"x", entry[0][1])
        table.finish()
    with pytest.raises(CheckpointError, match="nohdr.ckpt.index.*no header entry"):
        open_checkpoint(prefix)


def test_big_endian_checkpoint(tmp_path):
    values = np.arange(6, dtype=">i4").reshape(2, 3)
    raw = values.tobytes()
    Path(tmp_path / "be.ckpt.data-00000-of-00001").write_bytes(raw)
    header = field_varint(1, 1) + field_varint(2, 1) + field_bytes(3, field_varint(1, 1))
    proto = _entry_proto(3, (2, 3), 0, 0, len(raw), mask(crc32c(raw)))
    _write_index(tmp_path / "be.ckpt.index", [(b"v", proto)], header)
    with open_checkpoint(tmp_path / "be.ckpt") as reader:
        got = reader.get("v")
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, np.arange(6).reshape(2, 3))


def test_fuzzed_entries_only_raise_checkpoint_error(tmp_path):
    # Mutate entry protos (then re-checksum the blocks, so the parser itself is exercised).
    with open_checkpoint(ALBERT) as reader:
        source = Path(str(ALBERT) + ".index").read_bytes()
        entries = [(k, v) for k, v in read_table(source) if k]
        data_size = os.path.getsize(str(ALBERT) + ".data-00000-of-00001")
        assert len(entries) == len(reader)
    rng = random.Random(0)
    outcomes = {"ok": 0, "error": 0}
    for trial in range(150):
        mutated = list(entries)
        victim = rng.randrange(len(mutated))
        key, value = mutated[victim]
        value = bytearray(value)
        for _ in range(rng.randint(1, 2)):
            value[rng.randrange(len(value))] = rng.randrange(256)
        if rng.random() < 0.3:
            del value[rng.randrange(len(value)) :]
        mutated[victim] = (key, bytes(value))
        prefix = str(tmp_path / f"f{trial}.ckpt")
        shutil.copy(str(ALBERT) + ".data-00000-of-00001", prefix + ".data-00000-of-00001")
        _write_index(prefix + ".index", mutated)
        try:
            with open_checkpoint(prefix) as reader:
                for name in reader.names():
                    try:
                        reader.get(name)
                    except CheckpointError:
                        pass
            outcomes["ok"] += 1
        except CheckpointError as exc:
            assert f"f{trial}.ckpt" in str(exc)
            outcomes["error"] += 1
        for suffix in SUFFIXES:
            os.remove(prefix + suffix)
    assert outcomes["ok"] and outcomes["error"], outcomes
    assert data_size > 0


def test_fuzzed_index_bytes_only_raise_checkpoint_error(tmp_path):
    source = Path(str(BERT) + ".index").read_bytes()
    prefix = _copy_ckpt(BERT, tmp_path)
    rng = random.Random(1)
    for _ in range(200):
        data = bytearray(source)
        pos = rng.randrange(len(data))
        data[pos] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        Path(prefix + ".index").write_bytes(bytes(data))
        try:
            open_checkpoint(prefix).close()
        except CheckpointError as exc:
            assert "bert_model.ckpt" in str(exc)


def test_iter_block_rejects_bad_restart_count():
    block = struct.pack("<I", 1000)
    with pytest.raises(Exception, match="restart points"):
        list(iter_block(block, "block"))


# -- the real thing, when TensorFlow happens to be installed ------------------------------------
def test_tensorflow_reads_our_checkpoint(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tensors = mixed_tensors()
    prefix = write_tf_checkpoint(tensors, tmp_path / "model.ckpt", num_shards=2)
    listed = dict(tf.train.list_variables(prefix))
    assert {k: tuple(v) for k, v in listed.items()} == {k: v.shape for k, v in tensors.items()}
    reader = tf.train.load_checkpoint(prefix)
    for name, value in tensors.items():
        got = np.asarray(reader.get_tensor(name))
        if value.dtype == object:
            assert list(got.reshape(-1)) == list(value.reshape(-1)), name
        else:
            np.testing.assert_array_equal(got.astype(value.dtype), value, err_msg=name)
    assert tf.train.latest_checkpoint(str(tmp_path)) == prefix
