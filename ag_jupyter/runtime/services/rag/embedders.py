"""Embedders: text -> unit-length float32 vectors, for the RAG index.

Two kinds:

- :class:`WordLlamaEmbedder`, the embedded default: the ``wordllama`` package's
  ``l2_supercat`` token embeddings (256 dimensions, float16 weights of a 32,000-token
  Llama-2 tokenizer, 16 MB), averaged over a text's tokens. Its weights and tokenizer ship
  inside the ``wordllama`` wheel; they are read from the package's own folder with
  ``safetensors`` and ``tokenizers`` and nothing else, so it works with no network (and
  never imports ``wordllama`` itself, whose ``WordLlama.load()`` looks for the tokenizer in
  ``wordllama/tokenizer/`` -- the wheel has ``wordllama/tokenizers/`` -- then downloads it
  from a model hub, and whose import calls ``logging.basicConfig``). The averaging is
  ``WordLlamaInference.embed``'s (mean of the token vectors, no special tokens), computed
  without padding.
- :class:`CallableEmbedder`: any async callable ``texts -> list[list[float]]``, e.g. an
  embeddings endpoint (``context.llm(profile=...).embed`` once the LLM package has it);
  :class:`LLMProfileEmbedder` calls the context's LLM profile's ``embed`` by name.

Where AetherGraph differs: its RAG embeds through the LLM profile's remote embeddings API
(``embed_model``), so indexing fails offline; here the default needs no network and no key.

Every embedder has ``name`` (stored with a corpus: a corpus holds vectors of one embedder),
and ``async embed_batch(texts, context) -> np.ndarray`` of shape ``(len(texts), dim)``,
float32, each row of length 1 (or all zeros for a text with no tokens).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ...errors import ServiceNotConfiguredError

#: The environment variable choosing the default embedder: ``wordllama`` (the default) or
#: ``llm`` / ``llm:<profile>`` (the LLM profile's embeddings endpoint).
EMBEDDER_ENV = "AG_RAG_EMBEDDER"
WORDLLAMA_CONFIG = "l2_supercat"
WORDLLAMA_DIM = 256
#: Tokens per numpy step of the WordLlama embedder: each step holds the GIL for well
#: under a millisecond (a gather and a sum of this many 256-float rows).
TOKENS_PER_STEP = 4096
INSTALL_HINT = "pip install 'ag-jupyter[rag]'"


@runtime_checkable
class Embedder(Protocol):
    """What the RAG index needs from an embedder."""

    name: str

    async def embed_batch(self, texts: list[str], context: Any = None) -> np.ndarray:
        """Vectors of ``texts``: ``(len(texts), dim)`` float32, rows of length 1."""
        ...


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` (2-D) as float32 with rows scaled to length 1 (zero rows stay zero)."""
    out = np.asarray(matrix, dtype=np.float32)
    if out.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array; got shape {out.shape}")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(out / norms, dtype=np.float32)


def wordllama_files() -> tuple[Path, Path]:
    """``(weights, tokenizer)`` paths inside the installed ``wordllama`` package.

    Raises:
      ServiceNotConfiguredError: if ``wordllama`` is not installed or its files are
        missing (the message says how to install it).
    """
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceNotConfiguredError(
            "the embedded RAG index needs the 'wordllama' package (its embedding weights "
            f"ship in its wheel): {INSTALL_HINT}, or choose another embedder "
            "(RagService(workspace, embedder=async_fn) / AG_RAG_EMBEDDER=llm:<profile>)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    weights = root / "weights" / f"{WORDLLAMA_CONFIG}_{WORDLLAMA_DIM}.safetensors"
    tokenizer = root / "tokenizers" / f"{WORDLLAMA_CONFIG}_tokenizer_config.json"
    for path in (weights, tokenizer):
        if not path.is_file():
            raise ServiceNotConfiguredError(
                f"the wordllama package at {str(root)!r} lacks {path.name!r} (a partial "
                f"install?): reinstall it with {INSTALL_HINT}"
            )
    return weights, tokenizer


class WordLlamaEmbedder:
    """The embedded default embedder (see the module docstring); loaded on first use,
    in the calling thread (about 0.1 s), and shared by every corpus of the process.

    Attributes:
      name: ``"wordllama/l2_supercat_256"``. dim: 256.
    """

    name = f"wordllama/{WORDLLAMA_CONFIG}_{WORDLLAMA_DIM}"
    dim = WORDLLAMA_DIM

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._matrix: np.ndarray | None = None
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        state = "loaded" if self._matrix is not None else "not loaded"
        return f"WordLlamaEmbedder({self.name!r}, {state})"

    def load(self) -> None:
        """Read the weights and tokenizer from the package folder (once; blocking).

        Raises:
          ServiceNotConfiguredError: if ``wordllama`` (or ``safetensors``/``tokenizers``)
            is not installed.
        """
        if self._matrix is not None:
            return
        with self._lock:
            if self._matrix is not None:
                return
            weights, tokenizer_path = wordllama_files()
            try:
                from safetensors import safe_open
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise ServiceNotConfiguredError(
                    f"the embedded RAG index needs {exc.name!r} (a wordllama dependency): "
                    f"{INSTALL_HINT}"
                ) from exc
            with safe_open(str(weights), framework="np") as f:
                matrix = np.ascontiguousarray(f.get_tensor("embedding.weight"), np.float32)
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            self._tokenizer = tokenizer
            self._matrix = matrix

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (blocking; call it in a worker thread): ``(len(texts),
        256)`` float32 rows of length 1, zeros for a text without tokens.

        The tokenizer releases the GIL; the numpy work runs in steps of at most
        :data:`TOKENS_PER_STEP` tokens.
        """
        self.load()
        assert self._matrix is not None
        matrix = self._matrix
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        vocab = matrix.shape[0]
        i = 0
        while i < len(encodings):
            # Gather rows of as many texts as fit in one step (at least one text).
            j, tokens = i, 0
            while j < len(encodings) and (
                j == i or tokens + len(encodings[j].ids) <= TOKENS_PER_STEP
            ):
                tokens += len(encodings[j].ids)
                j += 1
            lengths = np.array([len(e.ids) for e in encodings[i:j]], dtype=np.int64)
            present = lengths > 0
            if present.any():
                ids = np.fromiter(
                    (t for e in encodings[i:j] for t in e.ids), dtype=np.int64, count=int(tokens)
                )
                np.clip(ids, 0, vocab - 1, out=ids)
                rows = matrix[ids]
                offsets = np.concatenate(([0], np.cumsum(lengths[present])[:-1]))
                sums = np.add.reduceat(rows, offsets, axis=0)
                index = np.arange(i, j)[present]
                out[index] = sums / lengths[present, None].astype(np.float32)
            i = j
        return normalise_rows(out)

    async def embed_batch(self, texts: list[str], context: Any = None) -> np.ndarray:
        """:meth:`embed_sync` in a worker thread."""
        return await asyncio.to_thread(self.embed_sync, texts)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """AetherGraph's ``embed(texts) -> list[list[float]]`` shape."""
        return (await self.embed_batch(list(texts))).tolist()


def _as_matrix(vectors: Any, count: int, who: str) -> np.ndarray:
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the embedder {who} must return a list of equal-length lists of floats; "
            f"conversion failed: {exc}"
        ) from None
    if matrix.ndim != 2 or matrix.shape[0] != count:
        raise ValueError(
            f"the embedder {who} returned {matrix.shape[0] if matrix.ndim else 0} vectors "
            f"(shape {matrix.shape}) for {count} texts; it must return one vector per text"
        )
    if not np.isfinite(matrix).all():
        raise ValueError(f"the embedder {who} returned NaN or infinite values")
    return normalise_rows(matrix)


class CallableEmbedder:
    """An embedder from an async (or sync) callable ``texts -> list[list[float]]``
    (or an array), called with at most ``batch_size`` texts at a time.

    Args:
      fn: the callable, e.g. an embeddings endpoint's client method.
      name: stored with the corpora it fills (default: the callable's qualified name).
      batch_size: texts per call (default 64).

    Raises (from :meth:`embed_batch`):
      TypeError, ValueError: if ``fn`` returns something else than one vector per text.
    """

    def __init__(
        self,
        fn: Callable[[list[str]], Awaitable[Any] | Any],
        *,
        name: str | None = None,
        batch_size: int = 64,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"embedder must be callable; got {fn!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.fn = fn
        self.name = name or f"callable:{getattr(fn, '__qualname__', type(fn).__name__)}"
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"CallableEmbedder({self.name!r})"

    async def embed_batch(self, texts: list[str], context: Any = None) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), self.batch_size):
            piece = texts[i : i + self.batch_size]
            result = self.fn(piece)
            if inspect.isawaitable(result):
                result = await result
            parts.append(_as_matrix(result, len(piece), repr(self.name)))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack(parts)


class LLMProfileEmbedder:
    """Embeds with the embeddings endpoint of an LLM profile: ``context.llm(profile=
    profile).embed(texts)`` (or ``context.llm().embed`` with no profile), resolved at each
    call from the context that indexes or searches.

    This is how an llm profile's endpoint is chosen instead of the embedded model
    (``AG_RAG_EMBEDDER=llm:<profile>`` or ``RagService(ws, embedder="llm:<profile>")``);
    it needs an LLM client with an ``embed`` method (the LLM package's profiles).

    Raises (from :meth:`embed_batch`):
      ServiceNotConfiguredError: if the context has no LLM with ``embed`` (or no such
        profile).
    """

    def __init__(self, profile: str | None = None, *, batch_size: int = 64) -> None:
        self.profile = profile or None
        self.name = f"llm:{self.profile or 'default'}"
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"LLMProfileEmbedder({self.name!r})"

    def _client(self, context: Any) -> Any:
        if context is None or not hasattr(context, "llm"):
            raise ServiceNotConfiguredError(
                f"the embedder {self.name!r} needs a context with an llm() service"
            )
        if self.profile is None:
            client = context.llm()
        else:
            try:
                client = context.llm(profile=self.profile)
            except TypeError:
                raise ServiceNotConfiguredError(
                    f"the embedder {self.name!r} needs LLM profiles (context.llm(profile=...)), "
                    "which this ag_jupyter's llm service does not have yet; use "
                    "RagService(workspace, embedder=async_fn) with your endpoint instead"
                ) from None
        if not callable(getattr(client, "embed", None)):
            raise ServiceNotConfiguredError(
                f"the LLM client of {self.name!r} ({type(client).__name__}) has no embed() "
                "method; configure an embeddings endpoint on that profile, or use the "
                "embedded default (AG_RAG_EMBEDDER=wordllama)"
            )
        return client

    async def embed_batch(self, texts: list[str], context: Any = None) -> np.ndarray:
        client = self._client(context)
        return await CallableEmbedder(
            client.embed, name=self.name, batch_size=self.batch_size
        ).embed_batch(texts)


_default_lock = threading.Lock()
_wordllama: WordLlamaEmbedder | None = None
_process_default: Embedder | None = None


def wordllama_embedder() -> WordLlamaEmbedder:
    """The process's one :class:`WordLlamaEmbedder` (its weights are loaded once)."""
    global _wordllama
    with _default_lock:
        if _wordllama is None:
            _wordllama = WordLlamaEmbedder()
        return _wordllama


EmbedderSpec = Embedder | Callable[[list[str]], Any] | str | None


def resolve_embedder(spec: EmbedderSpec) -> Embedder:
    """An :class:`Embedder` from a spec.

    Args:
      spec: None (the process default: :func:`set_default_embedder`, else
        ``$AG_RAG_EMBEDDER``, else WordLlama); ``"wordllama"``; ``"llm"`` or
        ``"llm:<profile>"``; an object with ``embed_batch``; or a callable ``texts ->
        list[list[float]]`` (async or not).

    Raises:
      ValueError: for an unknown name.
      TypeError: for anything else.
    """
    if spec is None:
        if _process_default is not None:
            return _process_default
        spec = os.environ.get(EMBEDDER_ENV) or "wordllama"
    if isinstance(spec, str):
        name = spec.strip()
        if name == "wordllama":
            return wordllama_embedder()
        if name == "llm" or name.startswith("llm:"):
            return LLMProfileEmbedder(name[4:] or None)
        raise ValueError(
            f"unknown embedder {spec!r} (from {EMBEDDER_ENV} or embedder=); use 'wordllama', "
            "'llm', 'llm:<profile>', or pass an async callable texts -> list[list[float]]"
        )
    if callable(getattr(spec, "embed_batch", None)) and isinstance(
        getattr(spec, "name", None), str
    ):
        return spec  # type: ignore[return-value]
    if callable(spec):
        return CallableEmbedder(spec)
    raise TypeError(
        f"embedder must be a name, an Embedder or a callable texts -> vectors; got {spec!r}"
    )


def set_default_embedder(spec: EmbedderSpec) -> None:
    """Choose the embedder of every RAG service built without one (None: back to
    ``$AG_RAG_EMBEDDER`` / WordLlama). Corpora keep the embedder they were filled with:
    search a corpus with another one and :class:`EmbedderMismatchError` says to
    ``reembed`` it."""
    global _process_default
    _process_default = None if spec is None else resolve_embedder(spec)
