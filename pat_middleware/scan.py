"""Finding tokens in files: what ``pat scan`` reads, and how.

Only regular files are read (symlinks followed), each at most
:data:`SCAN_MAX_BYTES`, so a device or a named pipe can neither hang a scan
nor fill memory. Line numbers are counted from one hit to the next, so a file
with many tokens costs linear time. Nothing here asks a store; a skipped
file is reported through the ``note`` callback.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pat_middleware.tokens import find_tokens

__all__ = ["SCAN_MAX_BYTES", "SKIP_DIRS", "Note", "files", "read_regular_file", "tokens_in_file"]

#: Files larger than this are skipped (with a note).
SCAN_MAX_BYTES = 32 * 1024 * 1024
#: Directories a scan never enters.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".tox", ".mypy_cache"})

#: Called with a file that was not read and why: ``note(path, "skipped (not a regular file)")``.
Note = Callable[[Path, str], None]


def files(paths: Iterable[str]) -> Iterator[Path]:
    """The files named, and every file below the directories named (sorted, :data:`SKIP_DIRS` left out)."""
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
                for file in sorted(names):
                    yield Path(root) / file
        else:
            yield path


def read_regular_file(path: Path, note: Note) -> bytes | None:
    """The bytes of a regular file (symlinks followed) of at most :data:`SCAN_MAX_BYTES`;
    None, after ``note``, for anything else: a device or a FIFO is never read."""
    too_big = f"skipped (larger than {SCAN_MAX_BYTES} bytes)"
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            note(path, "skipped (not a regular file)")
            return None
        if info.st_size > SCAN_MAX_BYTES:
            note(path, too_big)
            return None
        # O_NONBLOCK: a FIFO swapped in after the stat cannot block the open.
        with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as file:
            data = file.read(SCAN_MAX_BYTES + 1) or b""  # the file may have grown since the stat
    except OSError as exc:
        note(path, f"cannot read ({exc.strerror or exc})")
        return None
    if len(data) > SCAN_MAX_BYTES:
        note(path, too_big)
        return None
    return data


def tokens_in_file(path: Path, prefix: str | None, note: Note) -> Iterator[tuple[int, str, str]]:
    """``(line, prefix, token)`` for each token in the file (of ``prefix``, or any with None)."""
    data = read_regular_file(path, note)
    if data is None:
        return
    text = data.decode("utf-8", errors="replace")
    if "\r" in text:  # universal newlines, as text mode reads them
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    line, counted = 1, 0
    for offset, token in find_tokens(text, prefix):
        line += text.count("\n", counted, offset)
        counted = offset
        yield line, token.partition("_")[0], token
