"""Structure-aware text splitting that keeps every chunk an exact span of its document.

AetherGraph's ``TextSplitter`` (``services/rag/chunker.py`` before commit ``2ddc331``)
groups blocks (markdown sections, paragraphs, code blocks) under a budget of approximate
tokens (whitespace-separated words) with an overlap of trailing blocks, then *re-joins*
the blocks' stripped text, so its chunks are not substrings of the document. Here the
same grouping returns ``(start, end)`` character offsets: a chunk is always
``text[start:end]``, which is what citations point at.

Differences from AetherGraph's splitter, by design: a huge markdown section is split into
paragraphs without repeating its heading in every piece (the heading stays in the first),
and word windows (the last-resort split) keep the original whitespace between words.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

#: AetherGraph's defaults (``TextSplitter(target_tokens=400, overlap_tokens=60)``).
DEFAULT_TARGET_TOKENS = 400
DEFAULT_OVERLAP_TOKENS = 60
MODES = ("auto", "markdown", "code", "paragraph", "plain", "rst")

_WORD = re.compile(r"\S+")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_HEADING = re.compile(r"^[ ]{0,3}#{1,6}\s+\S", re.MULTILINE)
_CODE_START = re.compile(
    r"^\s*(def |class |async def |@|\w+\s*=\s*function\s*\(|if __name__ == ['\"]__main__['\"]:)"
)

Span = tuple[int, int]


def _trim(text: str, start: int, end: int) -> Span | None:
    """The span without leading/trailing whitespace, or None if it is all whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


class TextSplitter:
    """Split text into chunks of about ``target_tokens`` words with ``overlap_tokens``
    words of overlap, along the text's structure (AetherGraph's ``TextSplitter`` API).

    Args:
      target_tokens: the budget of a chunk in approximate tokens (whitespace-separated
        words; at least 50, as in AetherGraph).
      overlap_tokens: how many words of trailing blocks a chunk repeats from the one
        before (0 to ``target_tokens - 1``).
      mode: ``"auto"`` (markdown, code or paragraphs by heuristics, as AetherGraph),
        ``"markdown"``, ``"code"``, ``"paragraph"`` (``"plain"`` and ``"rst"`` are
        paragraph splitting too).
      token_counter: optional ``fn(text) -> int`` replacing the word count.

    Raises:
      ValueError: for an unknown ``mode``.
    """

    def __init__(
        self,
        target_tokens: int = DEFAULT_TARGET_TOKENS,
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
        mode: str = "auto",
        token_counter: Callable[[str], int] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.n = max(50, int(target_tokens))
        self.o = max(0, min(self.n - 1, int(overlap_tokens)))
        self.mode = mode
        self._token_counter = token_counter

    def __repr__(self) -> str:
        return f"TextSplitter(target_tokens={self.n}, overlap_tokens={self.o}, mode={self.mode!r})"

    # ------------------------------------------------------------------ public
    def split(self, text: str) -> list[str]:
        """The chunks of ``text`` (each an exact substring of it), in order."""
        return [text[a:b] for a, b in self.split_spans(text)]

    def split_spans(self, text: str) -> list[Span]:
        """The chunks of ``text`` as ``(start, end)`` character offsets, in order; empty
        for a text that is only whitespace."""
        if not text or not text.strip():
            return []
        mode = self.mode
        if mode == "auto":
            if self._looks_like_markdown(text):
                mode = "markdown"
            elif self._looks_like_code(text):
                mode = "code"
            else:
                mode = "paragraph"
        if mode == "markdown":
            return self._group(text, self._markdown_blocks(text))
        if mode == "code":
            blocks = self._code_blocks(text)
            if len(blocks) > 1:
                return self._group(text, blocks)
        return self._group(text, self._paragraph_blocks(text, 0, len(text)))

    # ---------------------------------------------------------------- counting
    def _tokens(self, text: str, start: int, end: int) -> int:
        if self._token_counter is not None:
            try:
                return int(self._token_counter(text[start:end]))
            except Exception:
                pass  # fail soft, as AetherGraph does
        return sum(1 for _ in _WORD.finditer(text, start, end))

    # --------------------------------------------------------------- heuristics
    @staticmethod
    def _looks_like_markdown(text: str) -> bool:
        # AetherGraph's heuristics: headings, fences, bullets, tables, links.
        if "# " in text or "```" in text:
            return True
        if re.search(r"^\s*[-*+]\s+\S", text, flags=re.MULTILINE):
            return True
        if "|" in text and re.search(r"\|.*\|", text):
            return True
        return bool("[" in text and "]" in text and "(" in text and ")" in text)

    @staticmethod
    def _looks_like_code(text: str) -> bool:
        if "```python" in text or "```js" in text or "```ts" in text:
            return True
        code_like = 0
        for line in text.splitlines():
            s = line.strip()
            if not s:
                continue
            if s.startswith(("def ", "class ", "async def ")):
                return True
            if s.startswith(("import ", "from ")):
                code_like += 1
            if s.endswith((":", "{", "};")):
                code_like += 1
        return code_like >= 5

    # ------------------------------------------------------------------- blocks
    @staticmethod
    def _paragraph_blocks(text: str, start: int, end: int) -> list[Span]:
        blocks: list[Span] = []
        pos = start
        for m in _BLANK_LINE.finditer(text, start, end):
            span = _trim(text, pos, m.start())
            if span:
                blocks.append(span)
            pos = m.end()
        span = _trim(text, pos, end)
        if span:
            blocks.append(span)
        return blocks

    def _markdown_blocks(self, text: str) -> list[Span]:
        starts = [m.start() for m in _HEADING.finditer(text)]
        if not starts:
            return self._paragraph_blocks(text, 0, len(text))
        bounds = ([0] if starts[0] > 0 else []) + starts + [len(text)]
        blocks: list[Span] = []
        for a, b in itertools.pairwise(bounds):
            span = _trim(text, a, b)
            if span is None:
                continue
            if self._tokens(text, *span) <= self.n * 2:
                blocks.append(span)
            else:  # a huge section: its paragraphs (the heading stays in the first)
                blocks.extend(self._paragraph_blocks(text, *span))
        return blocks

    @staticmethod
    def _code_blocks(text: str) -> list[Span]:
        blocks: list[Span] = []
        block_start = 0
        pos = 0
        for line in text.splitlines(keepends=True):
            if _CODE_START.match(line) and pos > block_start:
                span = _trim(text, block_start, pos)
                if span:
                    blocks.append(span)
                block_start = pos
            pos += len(line)
        span = _trim(text, block_start, len(text))
        if span:
            blocks.append(span)
        return blocks

    # ----------------------------------------------------------------- grouping
    def _words(self, text: str, start: int, end: int) -> list[Span]:
        """Windows of ``n`` words stepping ``n - o`` (AetherGraph's last resort)."""
        words = [m.span() for m in _WORD.finditer(text, start, end)]
        step = self.n - self.o if self.n > self.o else self.n
        out: list[Span] = []
        for i in range(0, len(words), step):
            window = words[i : i + self.n]
            out.append((window[0][0], window[-1][1]))
            if i + self.n >= len(words):
                break
        return out

    def _group(self, text: str, blocks: list[Span]) -> list[Span]:
        chunks: list[Span] = []
        current: list[tuple[Span, int]] = []
        current_len = 0

        def flush() -> None:
            chunks.append((current[0][0][0], current[-1][0][1]))

        for block in blocks:
            size = self._tokens(text, *block)
            if size == 0:
                continue
            if size > self.n * 2:  # a huge block: word windows of its own
                if current:
                    flush()
                    current, current_len = [], 0
                chunks.extend(self._words(text, *block))
                continue
            if current and current_len + size > self.n:
                flush()
                if self.o > 0:  # keep trailing blocks as overlap
                    kept: list[tuple[Span, int]] = []
                    kept_len = 0
                    for item in reversed(current):
                        if kept and kept_len + item[1] > self.o:
                            break
                        kept.insert(0, item)
                        kept_len += item[1]
                    # a single kept block larger than the whole overlap adds nothing new
                    if kept_len > self.o:
                        kept, kept_len = [], 0
                    current, current_len = kept, kept_len
                else:
                    current, current_len = [], 0
            current.append((block, size))
            current_len += size
        if current:
            flush()
        return chunks
