"""`kerasformers convert`: Google TF checkpoints to HF safetensors and back.

    kerasformers convert SRC DST [--model NAME] [--config PATH] [--dtype DTYPE]
                         [--shard-size SIZE] [--force] [--progress]

The model is built from the config beside SRC (or --config) by
`build_transformer_model`, with whichever heads (pooler, NSP, MLM, ...) the
checkpoint holds, filled from SRC by the family's mapping, and written to DST in
the other naming by `save_weights_as_checkpoint`: a TF checkpoint gets HF's names
as safetensors (with a config.json transformers reads), safetensors or a PyTorch
.bin get Google's names as a TF checkpoint (with a bert_config.json-style file);
a DST ending in .safetensors or .ckpt chooses the format itself. Tokenizer files
beside SRC are copied. Every tensor written is then read back and compared with
the model's (bit for bit, after the --dtype cast).
"""

import glob
import json
import os
import shutil
import sys

import numpy as np

from kerasformers.cli.display import human_size
from kerasformers.cli.main import EXIT_FAILED, CLIError, first_line, library_errors

DTYPES = ("float32", "bfloat16", "float16")
# Files of the tokenizers a checkpoint folder may hold (WordPiece, GPT-2's BPE,
# HF tokenizer.json, SentencePiece): copied beside the converted weights.
TOKENIZER_FILES = (
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
TOKENIZER_PATTERNS = ("*.model",)
_SOURCE_HELP = (
    "a Google TF checkpoint (its prefix, e.g. bert_model.ckpt), *.safetensors or "
    "model.safetensors.index.json, a PyTorch *.bin, or a directory holding one"
)


def add_parser(sub):
    parser = sub.add_parser(
        "convert",
        help="convert a checkpoint between Google TF and HF safetensors",
        description=(
            "Convert a checkpoint: a Google TF checkpoint becomes HF safetensors with a "
            "config.json transformers loads; HF safetensors (or a PyTorch .bin) become a "
            "Google-named TF checkpoint with a bert_config.json-style config. The written "
            "tensors are verified against the model. Example: kerasformers convert "
            "chinese_L-12_H-768_A-12/ bert-hf/ --model bert"
        ),
    )
    parser.add_argument("src", metavar="SRC", help=_SOURCE_HELP)
    parser.add_argument(
        "dst",
        metavar="DST",
        help="output directory (created), or a file: *.safetensors, or a TF prefix *.ckpt",
    )
    parser.add_argument(
        "--model",
        default="auto",
        help="model family (bert, albert, roformer, gpt2, t5.1.1, llama, ...); default "
        '"auto": the config\'s model_type (Google configs have none: give it)',
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="the model config (default: config.json / bert_config.json / "
        "albert_config.json / t5_config.json beside SRC)",
    )
    parser.add_argument(
        "--dtype",
        help=f"cast floating tensors to {' / '.join(DTYPES)} (default: keep the source's)",
    )
    parser.add_argument(
        "--shard-size",
        metavar="SIZE",
        help='safetensors: largest file, e.g. "2GB" or "500MiB" (default 5GB); larger sets '
        "are sharded with an index",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr even when it is not a terminal",
    )
    parser.set_defaults(func=run)
    return parser


def run(args):
    from kerasformers.cli.display import Progress

    dtype = _check_dtype(args.dtype)
    shard_size = _check_shard_size(args.shard_size)
    source_format, source = _detect(args.src)
    config_path = args.config or _find_config(args.src, source)
    raw = _read_config(config_path)
    model = _model_name(args.model, raw, config_path)
    target = _Target(args.dst, source_format, model)
    if shard_size is not None and target.format != "safetensors":
        raise CLIError(
            f"--shard-size applies to safetensors only; {target.weights} is a TF checkpoint "
            "(one data file)"
        )
    names, floats = _source_tensors(source)
    _check_family(model, target.naming)
    tokenizer_files = _tokenizer_files(args.src, source)
    _refuse_existing(target.outputs(tokenizer_files), args.force)

    progress = Progress(enabled=args.progress or sys.stderr.isatty())
    progress.start(f"loading {source}")
    builder = _load(model, config_path, raw, source, names, floats)
    progress.finish()
    with library_errors(config_path):
        config = builder.hf_config() if target.naming == "hf" else builder.google_config()
    written_dtype = dtype or _build_dtype(floats) or "float32"
    if target.naming == "hf":
        config["torch_dtype"] = config["dtype"] = written_dtype

    progress.start(f"writing {target.weights}")
    with library_errors(target.weights):
        written = builder.save_weights_as_checkpoint(
            target.weights,
            format=target.format,
            dtype=dtype,
            max_shard_size=shard_size,
            progress=progress,
        )
    progress.finish()
    with open(target.config, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    for path in tokenizer_files:
        destination = os.path.join(target.directory, os.path.basename(path))
        if not (os.path.exists(destination) and os.path.samefile(path, destination)):
            shutil.copyfile(path, destination)

    progress.start(f"verifying {written}")
    count, nbytes = _verify(builder, written, target.format, dtype, progress)
    progress.finish()

    source_naming, used = builder.match_checkpoint(names)
    if builder.variable_mapping() == builder.hf_variable_mapping():
        source_naming = "hf"  # a family with HF names only (LLaMA): the loader says "google"
    unused = [n for n in names if n not in used]
    if unused:
        more = f", ... ({len(unused) - 4} more)" if len(unused) > 4 else ""
        print(
            f"kerasformers convert: note: {len(unused)} source tensor(s) are not model weights "
            f"and were not converted: {', '.join(unused[:4])}{more}",
            file=sys.stderr,
        )
    files = [p for p in target.written_files(written, tokenizer_files) if os.path.isfile(p)]
    print(
        f"{model}: {source_format} ({source_naming} names) -> {target.format} "
        f"({target.naming} names, {written_dtype}): {count} tensors, {nbytes:,} bytes "
        f"({human_size(nbytes)}) in {len(files)} files under {target.directory}; verified: "
        "every tensor read back equals the model's"
    )
    return 0


# ---------------------------------------------------------------- options and inputs
def _check_dtype(dtype):
    if dtype is None:
        return None
    if dtype not in DTYPES:
        raise CLIError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def _check_shard_size(size):
    if size is None:
        return None
    from kerasformers.checkpoints.safetensors_writer import parse_size

    try:
        return parse_size(size)
    except ValueError as err:
        raise CLIError(f"--shard-size: {err}".replace("max_shard_size ", "")) from None


def _detect(src):
    from kerasformers import checkpoints

    with library_errors(src):
        fmt, path = checkpoints.detect_format(src)
    if fmt == "keras":
        raise CLIError(
            f"{path} is a Keras weights file: it holds no checkpoint names to convert (load it "
            "with model.load_weights and save with save_weights_as_checkpoint)"
        )
    return fmt, path


def _source_directory(src, resolved):
    return src if os.path.isdir(src) else os.path.dirname(os.path.abspath(resolved))


def _find_config(src, resolved):
    from kerasformers.models import config_file_names, find_config_file

    directory = _source_directory(src, resolved)
    path = find_config_file(directory)
    if path is None:
        raise CLIError(
            f"no config found beside {resolved}: looked for {', '.join(config_file_names())} "
            f"in {directory}; pass --config"
        )
    return path


def _read_config(path):
    from kerasformers.models import load_config

    with library_errors(path):
        return load_config(path)


def _model_name(model, raw, config_path):
    from kerasformers.models import MODELS, _auto_model

    allowed = ", ".join(["auto", *MODELS])
    key = model.lower()
    if key == "auto":
        if "model_type" not in raw:
            raise CLIError(
                f"{config_path} has no model_type (a Google-style config), so --model auto "
                f"cannot tell the family: pass --model, one of {', '.join(MODELS)}"
            )
        with library_errors(config_path):
            return _auto_model(raw, config_path)
    if key not in MODELS:
        raise CLIError(f"unknown --model {model!r}; allowed: {allowed}")
    return key


def _source_tensors(source):
    """(tensor names, the float dtypes among them) of the source checkpoint."""
    from kerasformers import checkpoints

    with library_errors(source), checkpoints.open_checkpoint(source) as reader:
        names = reader.names()
        dtypes = {reader.dtype(n).name for n in names}
    return names, {d for d in dtypes if d.startswith(("float", "bfloat"))} or {"float32"}


def _build_dtype(floats):
    """The dtype to build in: the source's when all its floats share a half width."""
    only = next(iter(floats)) if len(floats) == 1 else None
    return only if only in ("bfloat16", "float16") else None


def _check_family(model, naming):
    """Fails early (before loading anything) when the family has no such naming."""
    from kerasformers.cli.families import probe
    from kerasformers.models import MODELS

    tiny = probe(MODELS[model])
    if tiny is None:
        return  # the real model is checked when it is built
    writer = tiny.hf_config if naming == "hf" else tiny.google_config
    try:
        writer()
    except NotImplementedError as err:
        other = "HF safetensors" if naming == "hf" else "a Google-named TF checkpoint"
        raise CLIError(f"cannot convert {model} to {other}: {first_line(err)}") from None
    except ValueError:
        pass  # a property of the tiny model, checked again on the real one


def _tokenizer_files(src, resolved):
    directory = _source_directory(src, resolved)
    found = [os.path.join(directory, n) for n in TOKENIZER_FILES]
    for pattern in TOKENIZER_PATTERNS:
        found.extend(sorted(glob.glob(os.path.join(glob.escape(directory), pattern))))
    return [p for p in found if os.path.isfile(p)]


class _Target:
    """Where the output goes: its format, the weights path, the config path."""

    def __init__(self, dst, source_format, model):
        from kerasformers.models import MODELS

        cls = MODELS[model]
        name = os.path.basename(dst.rstrip("/" + os.sep))
        as_directory = dst.endswith(("/", os.sep)) or os.path.isdir(dst)
        if not as_directory and name.endswith((".safetensors", ".safetensors.index.json")):
            self.format, self.weights = "safetensors", dst
        elif not as_directory and name.endswith(".ckpt"):
            self.format, self.weights = "tf", dst
        elif not as_directory and name.endswith(
            (".bin", ".pt", ".pth", ".h5", ".index", ".json", ".npz")
        ):
            raise CLIError(
                f"cannot write {dst}: DST is a directory, a *.safetensors file or a TF "
                "checkpoint prefix *.ckpt"
            )
        else:
            self.format = "tf" if source_format == "safetensors" else "safetensors"
            if self.format == "tf":
                stem = cls.google_config_file.rsplit("_config.json", 1)
                filename = f"{stem[0]}_model.ckpt" if len(stem) == 2 else "model.ckpt"
            else:
                filename = "model.safetensors"
            self.weights = os.path.join(dst, filename)
        self.naming = "google" if self.format == "tf" else "hf"
        self.directory = os.path.dirname(os.path.abspath(self.weights))
        config_name = "config.json" if self.format == "safetensors" else cls.google_config_file
        self.config = os.path.join(self.directory, config_name)

    def weight_files(self):
        """Files of a checkpoint at `weights` (any shard count), existing or not."""
        from kerasformers.checkpoints.safetensors_writer import sharded_names

        if self.format == "tf":
            prefix = self.weights
            return [
                prefix + ".index",
                prefix + ".data-00000-of-00001",
                *glob.glob(glob.escape(prefix) + ".data-*-of-*"),
                os.path.join(self.directory, "checkpoint"),
            ]
        single, index, _ = sharded_names(self.weights, 1)
        base = index[: -len(".safetensors.index.json")]
        return [single, index, *glob.glob(glob.escape(base) + "-*-of-*.safetensors")]

    def outputs(self, tokenizer_files):
        copies = [os.path.join(self.directory, os.path.basename(p)) for p in tokenizer_files]
        return [*self.weight_files(), self.config, *copies]

    def written_files(self, written, tokenizer_files):
        """The files this conversion wrote (`written`: what the writer returned)."""
        if self.format == "tf":
            weights = [
                written + ".index",
                *sorted(glob.glob(glob.escape(written) + ".data-*-of-*")),
                os.path.join(self.directory, "checkpoint"),
            ]
        elif written.endswith(".json"):
            with open(written, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            weights = [written, *(os.path.join(self.directory, s) for s in shards)]
        else:
            weights = [written]
        copies = [os.path.join(self.directory, os.path.basename(p)) for p in tokenizer_files]
        return [*weights, self.config, *copies]


def _refuse_existing(outputs, force):
    existing = sorted({p for p in outputs if os.path.lexists(p)})
    if existing and not force:
        more = f" (and {len(existing) - 1} more output file(s))" if len(existing) > 1 else ""
        raise CLIError(f"{existing[0]} already exists{more}; pass --force to overwrite")


# ---------------------------------------------------------------- the conversion
def _load(model, config_path, raw, source, names, floats):
    """The builder of `model` with the heads `source` holds, filled from it."""
    from kerasformers.cli.families import detect_heads
    from kerasformers.models import MODELS, build_transformer_model, translate_config

    cls = MODELS[model]
    translated = translate_config(raw)
    structure = ()
    embedding, hidden = translated.get("embedding_size"), translated.get("hidden_size")
    if embedding is not None and embedding != hidden:
        structure = (("embedding_size", 4),)  # a tiny probe with an embedding projection
    heads = detect_heads(cls, names, structure)
    options = dict(heads)
    dtype = _build_dtype(floats)
    if dtype is not None:
        options["dtype"] = dtype  # no float32 copy of a half-width checkpoint
    with library_errors(source):
        # With the checkpoint given, the builder skips its (overwritten) random init.
        return build_transformer_model(
            config_path, source, model=model, return_keras_model=False, **options
        )


def _verify(builder, written, fmt, dtype, progress):
    """Reads every written tensor back and compares it with the model's, bit for bit.

    Returns (tensor count, tensor bytes); a difference is a CLIError (exit code 1).
    """
    from kerasformers import checkpoints

    expected = builder.checkpoint_tensors(fmt, dtype=dtype)
    with library_errors(written), checkpoints.open_checkpoint(written) as reader:
        names = reader.names()
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        if missing or extra:
            what = f"lacks {missing[:3]}" if missing else f"holds unexpected {extra[:3]}"
            raise CLIError(
                f"verification failed: {written} {what} ({len(missing)} missing, "
                f"{len(extra)} unexpected tensors)",
                code=EXIT_FAILED,
            )
        nbytes = 0
        for done, name in enumerate(names, 1):
            got = reader.get(name)
            want = np.asarray(expected[name])
            if got.dtype != want.dtype or got.shape != want.shape:
                raise CLIError(
                    f"verification failed: tensor {name!r} in {written} is {got.dtype} "
                    f"{list(got.shape)}, the model's is {want.dtype} {list(want.shape)}",
                    code=EXIT_FAILED,
                )
            if not np.array_equal(_bits(got), _bits(want)):
                raise CLIError(
                    f"verification failed: tensor {name!r} in {written} differs from the model's",
                    code=EXIT_FAILED,
                )
            nbytes += got.nbytes
            progress(done, len(names))
    return len(names), nbytes


def _bits(array):
    """The array's bytes (NaNs and signed zeros compared exactly)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)
