"""One model directory of each kind per test session (built once, read by servers)."""

import pytest

from tests.serving.helpers import make_embedding_dir, make_generation_dir


@pytest.fixture(scope="session")
def generation_dir(tmp_path_factory):
    return make_generation_dir(tmp_path_factory.mktemp("served") / "tiny-qwen2")


@pytest.fixture(scope="session")
def embedding_dir(tmp_path_factory):
    return make_embedding_dir(tmp_path_factory.mktemp("served") / "tiny-bert")


@pytest.fixture(scope="session")
def served_generation(generation_dir):
    """The same directory loaded in the test process: the reference side."""
    from kerasformers.serving import load_served_model

    return load_served_model(str(generation_dir))
