"""Content-addressed files in a workspace folder: ``<root>/ab/cdef...`` named by the sha256
of their content.

Used for artifact contents (``artifacts/``) and for run outputs and inputs too large for a
database row (``blobs/``). Writes go to a ``.tmp-<pid>-<random>`` file (mode 0600) in the
blob's own folder, are synced, then moved into place with ``os.replace``, so a reader never
sees half a file and a kill leaves only a temporary file (removed when a workspace next
opens). Nothing is followed through a symbolic link: the two-hex folder is checked with
``lstat`` and files are opened with ``O_NOFOLLOW``. Loads verify the content's hash.

All methods block: call them from a worker thread (``Workspace.run_in_io_thread``).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from ..errors import BlobError, BlobMissingError
from .workspace import DIR_MODE, FILE_MODE, TMP_PREFIX

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CHUNK = 1 << 20


# Raised here, defined with every runtime exception (re-exported for callers of this module).
__all__ = ["BlobError", "BlobMissingError", "BlobStore", "is_digest"]


def is_digest(value: object) -> bool:
    """Whether ``value`` is a sha256 hex digest (64 lowercase hex digits)."""
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


class BlobStore:
    """The content-addressed files under ``root`` (an existing folder of the workspace).

    Args:
      root: the folder (created 0700 by the workspace when it opens).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"BlobStore({str(self.root)!r})"

    def _folder(self, digest: str, *, create: bool) -> Path:
        if not is_digest(digest):
            raise BlobError(f"{digest!r} is not a sha256 digest (64 lowercase hex digits)")
        folder = self.root / digest[:2]
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            if not create:
                raise BlobMissingError(f"no blob {digest} in {str(self.root)!r}") from None
            try:
                os.mkdir(folder, DIR_MODE)
            except FileExistsError:
                pass
            info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode):
            raise BlobError(
                f"{str(folder)!r} is not a plain folder (a symbolic link?); the workspace "
                "never follows links: remove it"
            )
        return folder

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (whether or not it exists)."""
        return self.root / digest[:2] / digest[2:]

    # ------------------------------------------------------------------ writing
    def _temp(self, folder: Path) -> tuple[int, str]:
        name = f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        path = str(folder / name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
        return os.open(path, flags, FILE_MODE), path

    def _finish(self, fd: int, tmp: str, final: Path) -> None:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            info = os.lstat(final)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            os.unlink(tmp)
            raise BlobError(f"{str(final)!r} is not a plain file (a symbolic link?); remove it")
        os.replace(tmp, final)

    def _exists_plain(self, final: Path, size: int | None) -> bool:
        try:
            info = os.lstat(final)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(info.st_mode) and (size is None or info.st_size == size)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its sha256 digest (an existing blob is kept as is).

        Raises:
          OSError: if the folder cannot be written (full disk, read-only).
          BlobError: if a symbolic link sits where the blob or its folder should be.
        """
        digest = hashlib.sha256(data).hexdigest()
        folder = self._folder(digest, create=True)
        final = folder / digest[2:]
        if self._exists_plain(final, len(data)):
            return digest
        fd, tmp = self._temp(folder)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        try:
            self._finish(fd, tmp, final)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        return digest

    def put_chunks(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store the concatenation of ``chunks`` (streamed: any size); returns
        ``(digest, size in bytes)``.

        Raises:
          OSError, BlobError: as :meth:`put_bytes`.
        """
        hasher = hashlib.sha256()
        size = 0
        # The digest is only known at the end: write into the root folder, then move.
        fd, tmp = self._temp(self.root)
        try:
            try:
                for chunk in chunks:
                    hasher.update(chunk)
                    size += len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            except BaseException:
                os.close(fd)
                raise
            digest = hasher.hexdigest()
            final = self._folder(digest, create=True) / digest[2:]
            if self._exists_plain(final, size):
                os.close(fd)
                os.unlink(tmp)
                return digest, size
            self._finish(fd, tmp, final)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        return digest, size

    def put_file(self, source: str | os.PathLike[str]) -> tuple[str, int]:
        """Copy the file at ``source`` in (streamed); returns ``(digest, size)``.

        Raises:
          FileNotFoundError / IsADirectoryError: if ``source`` is not a readable file.
          OSError, BlobError: as :meth:`put_bytes`.
        """
        with open(source, "rb") as src:
            return self.put_chunks(iter(lambda: src.read(_CHUNK), b""))

    # ------------------------------------------------------------------ reading
    def _open(self, digest: str) -> int:
        folder = self._folder(digest, create=False)
        try:
            return os.open(folder / digest[2:], os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            raise BlobMissingError(f"no blob {digest} in {str(self.root)!r}") from None
        except OSError as exc:
            if exc.errno == 40:  # ELOOP: a symbolic link
                raise BlobError(
                    f"{str(folder / digest[2:])!r} is a symbolic link; the workspace never "
                    "follows links: remove it"
                ) from None
            raise

    def read(self, digest: str) -> bytes:
        """The content of blob ``digest``, after checking it still hashes to ``digest``.

        Raises:
          BlobMissingError: if it is missing.
          BlobError: if it is not a plain file, or its content changed.
        """
        fd = self._open(digest)
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobError(
                f"blob {digest} in {str(self.root)!r} was modified on disk (its content no "
                "longer matches its hash); it cannot be trusted"
            )
        return data

    def verify(self, digest: str) -> int:
        """Check blob ``digest`` (streamed) and return its size in bytes.

        Raises:
          BlobError: as :meth:`read`.
        """
        fd = self._open(digest)
        hasher = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "rb") as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        if hasher.hexdigest() != digest:
            raise BlobError(
                f"blob {digest} in {str(self.root)!r} was modified on disk (its content no "
                "longer matches its hash); it cannot be trusted"
            )
        return size

    def exists(self, digest: str) -> bool:
        """Whether a plain file holds blob ``digest`` (not verified)."""
        if not is_digest(digest):
            return False
        return self._exists_plain(self.path(digest), None)

    def delete(self, digest: str) -> int:
        """Remove blob ``digest``; returns the bytes freed (0 if it was not there)."""
        if not is_digest(digest):
            return 0
        final = self.path(digest)
        try:
            info = os.lstat(final)
            os.unlink(final)
        except FileNotFoundError:
            return 0
        return info.st_size
