"""`kerasformers inspect`: what a checkpoint holds, and whether it is intact.

    kerasformers inspect PATH [--json] [--limit N]

Prints the format, the model family and naming (Google or HF) its tensor names fit
(from a config.json beside it when that names a model_type, else by matching the
names against every family's own mappings; "unknown" when none fits), the tensor
table, the count and total size, and the checksums: every CRC-32C of a TF
checkpoint and every zip CRC of a PyTorch file are verified (a failure exits with
code 1); safetensors carries none, but its header and sizes are validated.
"""

import json
import math
import os
import zipfile

from kerasformers.cli.main import EXIT_FAILED, CLIError, library_errors


def add_parser(sub):
    parser = sub.add_parser(
        "inspect",
        help="show a checkpoint's format, family, tensors and checksums",
        description=(
            "Show what a checkpoint holds: its format, the model family and naming its "
            "tensor names fit, the tensors (name, shape, dtype), their count and size, "
            "and whether its checksums hold (TF: every tensor's CRC-32C; PyTorch: the "
            "zip CRCs). Example: kerasformers inspect chinese_L-12_H-768_A-12/"
        ),
    )
    parser.add_argument(
        "path",
        metavar="PATH",
        help="a TF checkpoint prefix, *.safetensors or its index.json, a PyTorch *.bin, "
        "or a directory holding one",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--limit", type=int, metavar="N", help="list the first N tensors only (default: all)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args):
    from kerasformers import checkpoints
    from kerasformers.cli.display import human_size

    if args.limit is not None and args.limit < 0:
        raise CLIError(f"--limit must be >= 0, got {args.limit}")
    with library_errors(args.path):
        fmt, path = checkpoints.detect_format(args.path)
        if fmt == "keras":
            raise CLIError(
                f"{path} is a Keras weights file, read through a model (model.load_weights), "
                "not tensor by tensor: inspect reads TF, safetensors and PyTorch checkpoints"
            )
        reader = checkpoints.open_checkpoint(path)
    with reader:
        names = reader.names()
        tensors = [
            {"name": n, "shape": list(reader.shape(n)), "dtype": reader.dtype(n).name}
            for n in names
        ]
        # Strings (object dtype) have no fixed size: left out of the total.
        total = sum(
            math.prod(reader.shape(n)) * reader.dtype(n).itemsize
            for n in names
            if reader.dtype(n).kind != "O"
        )
        checksums = _checksums(reader, fmt, path)
        skipped = dict(reader.skipped)
    files = _files(fmt, path)
    family = _family(names, args.path, path)
    shown = tensors if args.limit is None else tensors[: args.limit]
    report = {
        "path": path,
        "format": fmt,
        "files": files,
        **family,
        "tensor_count": len(tensors),
        "total_bytes": total,
        "total_size": human_size(total),
        "checksums": checksums,
        "tensors": shown,
        "more": len(tensors) - len(shown),
        "skipped": skipped,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_text(report))
    if checksums["status"] == "failed":
        raise CLIError(checksums["detail"], code=EXIT_FAILED)
    return 0


def _checksums(reader, fmt, path):
    """{"status": "ok" | "failed" | "none", "detail": ...} for the whole checkpoint."""
    from kerasformers.checkpoints import CheckpointError

    names = reader.names()
    if fmt == "tf":
        for name in names:  # the reader verifies each tensor's CRC-32C as it reads it
            try:
                reader.get(name)
            except CheckpointError as err:
                return {"status": "failed", "detail": str(err).splitlines()[0]}
        return {"status": "ok", "detail": f"ok ({len(names)} tensors, CRC-32C each)"}
    if fmt == "torch":
        checked = 0
        for file in _files(fmt, path):
            if file.endswith(".json"):
                continue
            if not zipfile.is_zipfile(file):
                return {"status": "none", "detail": f"none in format ({file} is a legacy pickle)"}
            try:
                with zipfile.ZipFile(file) as archive:
                    bad = archive.testzip()
                    checked += len(archive.infolist())
            except (zipfile.BadZipFile, OSError) as err:
                return {"status": "failed", "detail": f"{file}: {err}"}
            if bad is not None:
                return {
                    "status": "failed",
                    "detail": f"zip CRC mismatch in {file}: member {bad!r} is damaged",
                }
        return {"status": "ok", "detail": f"ok ({checked} zip members, CRC-32 each)"}
    return {"status": "none", "detail": "none in format; header and sizes valid"}


def _files(fmt, path):
    """The files a checkpoint is made of."""
    import glob

    if fmt == "tf":
        return [path + ".index", *sorted(glob.glob(glob.escape(path) + ".data-*-of-*"))]
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            shards = sorted(set(json.load(f).get("weight_map", {}).values()))
        directory = os.path.dirname(path)
        return [path, *(os.path.join(directory, s) for s in shards)]
    return [path]


def _family(names, given, resolved):
    """The family fields of the report, from a config.json beside the checkpoint
    (model_type) or from the tensor names."""
    from kerasformers.cli.families import detect_family

    model, source = _config_model(given, resolved)
    match = detect_family(names, model=model)
    if model is not None and match.naming is None:
        note = f"{source} names {model}, but the tensor names do not fit it"
    elif model is not None:
        note = f"from {source}"
    elif match.family is None:
        note = "no family's names fit these tensors"
    else:
        note = "from the tensor names"
    return {
        "family": match.family,
        "naming": match.naming,
        "also_fits": match.also_fits,
        "family_note": note,
        "unused": match.unused,
    }


def _config_model(given, resolved):
    """(model= name, where it came from) from a config.json beside, or (None, None)."""
    from kerasformers.models import HF_MODEL_TYPES, _auto_model

    directory = given if os.path.isdir(given) else os.path.dirname(os.path.abspath(resolved))
    path = os.path.join(directory, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None, None
    if not isinstance(config, dict) or config.get("model_type") not in HF_MODEL_TYPES:
        return None, None
    return _auto_model(config, path), f"{path} (model_type {config['model_type']!r})"


def _text(report):
    from kerasformers.cli.display import human_size

    family = report["family"] or "unknown"
    if report["naming"]:
        family += f" ({report['naming']} names"
        if report["also_fits"]:
            family += f"; the names fit {', '.join(report['also_fits'])} just as well"
        family += ")"
    family += f" [{report['family_note']}]"
    lines = [
        f"path:      {report['path']}",
        f"format:    {report['format']} ({len(report['files'])} file(s))",
        f"family:    {family}",
        f"tensors:   {report['tensor_count']}",
        f"size:      {report['total_bytes']:,} bytes ({human_size(report['total_bytes'])})",
        f"checksums: {report['checksums']['detail']}",
    ]
    if report["unused"]:
        lines.append(
            f"not model weights: {len(report['unused'])} "
            f"({', '.join(report['unused'][:4])}{', ...' if len(report['unused']) > 4 else ''})"
        )
    if report["skipped"]:
        lines.append(f"unreadable entries: {len(report['skipped'])}")
        lines.extend(f"  {name}: {why}" for name, why in sorted(report["skipped"].items()))
    rows = [(t["name"], str(t["shape"]), t["dtype"]) for t in report["tensors"]]
    if rows:
        width = max(len(r[0]) for r in rows)
        shape_width = max(len(r[1]) for r in rows)
        lines.append("")
        lines.append(f"{'name':<{width}}  {'shape':<{shape_width}}  dtype")
        lines.extend(f"{n:<{width}}  {s:<{shape_width}}  {d}" for n, s, d in rows)
    if report["more"]:
        lines.append(f"… {report['more']} more")
    return "\n".join(lines)
