"""/v1/embeddings of an encoder model: CLS or mean pooling, unit norm, padding
inert; the reference runs each text alone, unpadded, through the model."""

import numpy as np
import pytest

from kerasformers.models import build_transformer_model
from kerasformers.serving import load_served_model
from kerasformers.serving.embeddings import Embedder
from kerasformers.tokenizers import Tokenizer
from tests.serving.helpers import running

TEXTS = ["Hello, world!", "你好，世界", "a much longer sentence about cats and dogs and mats", "x"]


def reference(folder, texts, pooling):
    model = build_transformer_model(str(folder / "config.json"), str(folder), model="bert")
    tokenizer = Tokenizer(str(folder / "vocab.txt"), do_lower_case=False)
    out = []
    for text in texts:
        ids = np.array([tokenizer.encode(text)[0]], "int32")
        hidden = np.asarray(model.predict_on_batch([ids, np.zeros_like(ids)]))[0]
        vector = hidden[0] if pooling == "cls" else hidden.mean(axis=0)
        out.append(vector / np.linalg.norm(vector))
    return np.stack(out)


@pytest.mark.parametrize("pooling, bucket", [("cls", False), ("mean", True), ("mean", False)])
def test_embedder_matches_texts_run_alone(embedding_dir, pooling, bucket):
    served = load_served_model(str(embedding_dir), pooling=pooling)
    assert served.kind == "embedding"
    vectors, n_tokens = Embedder(served, bucket=bucket).embed(TEXTS)
    expected = reference(embedding_dir, TEXTS, pooling)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-6)
    assert n_tokens == sum(len(served.tokenizer.encode(t)[0]) for t in TEXTS)
    # The pooled vectors differ between texts (a constant output would pass the norm check).
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-2


def test_embeddings_server_and_openai_client(embedding_dir):
    openai = pytest.importorskip("openai")
    import httpx

    expected = reference(embedding_dir, TEXTS, "cls")
    with running(embedding_dir) as server:
        # The client asks for base64 by default and decodes it.
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        got = client.embeddings.create(model="tiny-bert", input=TEXTS)
        vectors = np.array([d.embedding for d in sorted(got.data, key=lambda d: d.index)])
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
        assert got.usage.prompt_tokens > len(TEXTS)
        one = client.embeddings.create(model="tiny-bert", input=TEXTS[1], encoding_format="float")
        np.testing.assert_allclose(one.data[0].embedding, expected[1], atol=1e-5)
        # An encoder serves no completions; errors name the field.
        with pytest.raises(openai.BadRequestError, match="embedding model"):
            client.completions.create(model="tiny-bert", prompt="hi", max_tokens=2)
        for body, param in [
            ({"model": "tiny-bert", "input": ""}, "input"),
            ({"model": "tiny-bert", "input": []}, "input"),
            ({"model": "tiny-bert", "input": "x " * 100}, "input"),  # > 64 positions
            ({"model": "tiny-bert", "input": "x", "dimensions": 8}, "dimensions"),
            ({"model": "tiny-bert", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ]:
            response = httpx.post(server.url + "/v1/embeddings", json=body, timeout=30)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == param
        card = httpx.get(server.url + "/v1/models").json()["data"][0]
        assert card["kind"] == "embedding" and card["pooling"] == "cls"
