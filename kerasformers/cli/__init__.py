"""The `kerasformers` command: convert and inspect checkpoints, serve a model.

Every subcommand lives in its own module and registers itself through
`add_parser(subparsers)`; `main` dispatches. A user mistake (a missing file, a
corrupt checkpoint, a bad option) is a `CLIError`: one line on stderr and exit
code 2, never a traceback.

Example:
    $ kerasformers convert bert_model.ckpt out/ --model bert
    $ kerasformers inspect out/model.safetensors
    $ kerasformers serve out/ --port 8000
"""

from kerasformers.cli.main import CLIError, main

__all__ = ["CLIError", "main"]
