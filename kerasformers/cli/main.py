"""Argument parsing and dispatch of the `kerasformers` command."""

import argparse
import os
import sys

# Exit codes: 0 done, 1 a check failed (e.g. convert's verification), 2 a user
# mistake (bad option, missing or corrupt file), 130 interrupted.
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class CLIError(Exception):
    """A user-facing failure: printed as one line, no traceback.

    Args:
        message: what went wrong, naming the file / option / value.
        code: the exit code (2: a usage or input error; 1: a failed check).
    """

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


def first_line(err):
    """An exception's message on one line: its first line, and the first detail when
    the message lists several ("... does not fit the model: missing tensor ... (and
    3 more)")."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if len(lines) == 1:
        return lines[0]
    rest = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
    return f"{lines[0].rstrip(':')}: {lines[1]}{rest}"


class library_errors:
    """Context manager: the library's own errors inside it (a corrupt or unfitting
    checkpoint, a bad config, an unreadable file) become a one-line `CLIError`
    naming `where` (the file concerned).

    The library reports user mistakes as ValueError subclasses (CheckpointError,
    WeightLoadingError, config errors), TypeError (a config value of the wrong
    type), OSError and NotImplementedError (a family without some writer).

    Example:
        >>> with library_errors(path):
        ...     reader = open_checkpoint(path)
    """

    def __init__(self, where=None):
        self.where = None if where is None else str(where)

    def __enter__(self):
        return self

    def __exit__(self, kind, err, traceback):
        if err is None or isinstance(err, CLIError):
            return False
        if isinstance(err, (ValueError, TypeError, OSError, NotImplementedError, KeyError)):
            message = first_line(err)
            if isinstance(err, OSError) and err.filename and err.strerror:
                message = f"{err.filename}: {err.strerror}"
            elif self.where and self.where not in message:
                message = f"{self.where}: {message}"
            raise CLIError(message) from None
        return False


def _parser():
    from kerasformers.cli import convert, inspection, serve

    parser = argparse.ArgumentParser(
        prog="kerasformers",
        description="Convert and inspect Transformer checkpoints; serve a model over an "
        "OpenAI-compatible HTTP API.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (convert, inspection, serve):
        module.add_parser(sub)
    return parser


def main(argv=None):
    """Runs the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    # Keras must know its backend before anything imports it; unset, it would
    # pick tensorflow, which is usually not installed.
    os.environ.setdefault("KERAS_BACKEND", _default_backend())
    try:
        return args.func(args) or 0
    except CLIError as err:
        print(f"kerasformers {args.command}: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"kerasformers {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _default_backend():
    """KERAS_BACKEND when unset: the first of jax / torch / tensorflow installed."""
    import importlib.util

    for name in ("jax", "torch", "tensorflow"):
        if importlib.util.find_spec(name) is not None:
            return name
    return "jax"


def entry_point():
    """The console script."""
    sys.exit(main())
