"""Argument checks shared by the RAG service and its facades (a leaf of the package)."""

from __future__ import annotations

from typing import Any

from ...errors import ServiceNotConfiguredError


def check_corpus_id(corpus_id: Any) -> str:
    """``corpus_id`` if it is a non-empty str without NUL.

    Raises:
      TypeError: otherwise (naming the value).
    """
    if not isinstance(corpus_id, str) or not corpus_id or "\x00" in corpus_id:
        raise TypeError(f"corpus_id must be a non-empty str; got {corpus_id!r}")
    return corpus_id


def llm_client(llm: Any, context: Any) -> Any:
    """The chat client ``answer`` uses: ``llm`` itself (an object with an async
    ``chat(messages)``), the context's ``llm(profile=llm)`` when it is a profile name, or
    the context's ``llm()``.

    Raises:
      TypeError: for an ``llm`` without ``chat``.
      ServiceNotConfiguredError: when there is no LLM to use.
    """
    if llm is not None and not isinstance(llm, str):
        if not callable(getattr(llm, "chat", None)):
            raise TypeError(f"llm must have an async chat(messages) method; got {llm!r:.80}")
        return llm
    if context is None or not callable(getattr(context, "llm", None)):
        raise ServiceNotConfiguredError(
            "answer() needs an LLM: pass llm=client (with async chat(messages)) or call it "
            "through context.rag, whose context.llm() is used"
        )
    if isinstance(llm, str):
        try:
            return context.llm(profile=llm)
        except TypeError:
            raise ServiceNotConfiguredError(
                f"answer(llm={llm!r}) names an LLM profile, but this context's llm() takes "
                "no profile; pass an LLM client object, or configure the default llm()"
            ) from None
    return context.llm()
