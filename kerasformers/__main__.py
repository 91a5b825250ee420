"""`python -m kerasformers ...` runs the `kerasformers` command."""

from kerasformers.cli.main import entry_point

if __name__ == "__main__":
    entry_point()
