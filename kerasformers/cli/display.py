"""What the subcommands show: sizes in words, and a one-line progress display.

Progress goes to stderr ("writing 12/199"), so that stdout stays for results. On a
terminal the line is redrawn in place (at most ten times a second); elsewhere
(--progress into a log) a line is printed per tenth.
"""

import sys
import time


class Progress:
    """Reports `label done/total` on stderr while a phase runs.

    Args:
        enabled: show anything at all (the subcommands: stderr is a terminal, or
            --progress).
        stream: where to write (stderr).

    Example:
        >>> progress = Progress(enabled=True)
        >>> progress.start("verifying")
        >>> for i in range(n): ...; progress(i + 1, n)
        >>> progress.finish()
    """

    def __init__(self, enabled, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = ""
        self._shown = 0.0
        self._step = -1
        self._open = False

    def start(self, label):
        """Begins a phase; shows its label at once (a phase may report no counts)."""
        self.finish()
        self.label, self._shown, self._step = label, 0.0, -1
        if self.enabled:
            self._write(f"{label} ...")

    def __call__(self, done, total):
        if not self.enabled:
            return
        if self.tty:
            now = time.monotonic()
            if done < total and now - self._shown < 0.1:
                return
            self._shown = now
            self._write(f"{self.label} {done}/{total}")
        else:
            step = done * 10 // max(total, 1)
            if step != self._step:
                self._step = step
                self._write(f"{self.label} {done}/{total}")

    def finish(self):
        """Ends the current phase's line."""
        if self.enabled and self._open and self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._open = False

    def _write(self, text):
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self._open = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def human_size(nbytes):
    """Bytes in binary units: 1536 -> "1.5 KiB"."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
