"""Pieces of a long chapter run kept as they finish, so that a cut run resumes.

A chapter's full profile can take longer than one sitting on a CPU (chapter 4's r̂ sweep at
d = 1000: thirty compressed and thirty narrow runs). Its independent runs — one trial of one r̂
and method, one width of the depth study — each return a small row of numbers. ``Pieces`` keeps
each row as one JSON file in a folder, named by the piece, with the settings it was made with;
running the chapter again reads the finished pieces instead of training them again.

A piece is written to a temporary file and renamed into place, so it is whole or absent. One
made with other settings, or that cannot be read, is refused with a message naming the file; it
is never reused. A row read back is the row that was computed, so the chapter's results are the
same whether a run was whole or resumed.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from companion.book.results import git_revision

PIECE_FORMAT = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.=-]*$")


class PieceError(ValueError):
    """A stored piece that cannot be used: half-written, unreadable, or made with other settings."""


class Pieces:
    """The finished pieces of one chapter run in ``folder`` (None: keep nothing, compute every piece).

    Args:
      folder: where the pieces go (created on the first one).
      settings: everything a piece's numbers depend on (JSON-serialisable, e.g. the chapter's
        config as a dict); a stored piece must have been made with equal settings.
    """

    def __init__(self, folder: str | Path | None, settings: Mapping[str, Any]):
        self.folder = None if folder is None else Path(folder)
        self.settings = json.loads(json.dumps(dict(settings)))  # as it reads back from JSON
        self.read = 0  # pieces read from the folder in this run
        self.computed = 0  # pieces computed (and stored, with a folder) in this run
        # The code that computes the pieces is the code loaded now; a commit made while a long run
        # goes on (records, prose) must not relabel the pieces it writes later.
        self.revision = git_revision() if self.folder is not None else "unknown"

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"a piece's name is lower-case letters, digits and _.=-, got {name!r}")
        if self.folder is None:
            raise ValueError("no folder: nothing is stored")
        return self.folder / f"{name}.json"

    def get(self, name: str, compute: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        """The piece ``name``: read when stored, else ``compute()``-d and stored.

        Args:
          compute: returns the piece's row (a dict of JSON numbers and strings).

        Raises:
          PieceError: the stored file is cut, unreadable, or made with other settings.
        """
        if self.folder is None:
            self.computed += 1
            return dict(compute())
        path = self.path(name)
        if path.exists():
            row = self._read(path)
            self.read += 1
            return row
        start = time.perf_counter()
        row = json.loads(json.dumps(dict(compute())))
        doc = {"format": PIECE_FORMAT, "name": name, "settings": self.settings, "row": row,
               "revision": self.revision, "wall_time_s": time.perf_counter() - start}
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(partial, path)
        self.computed += 1
        return row

    def verify(self) -> int:
        """Read every stored piece now (before hours of other work), so a bad one stops the run at once.

        Returns:
          The number of stored pieces.

        Raises:
          PieceError: one is cut, unreadable, or made with other settings.
        """
        if self.folder is None or not self.folder.is_dir():
            return 0
        paths = sorted(self.folder.glob("*.json"))
        for path in paths:
            self._read(path)
        return len(paths)

    def _read(self, path: Path) -> dict[str, Any]:
        redo = "delete it to compute that piece again"
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PieceError(f"{path} is not a whole piece (cut while being written?); {redo}") from None
        if not isinstance(doc, dict) or doc.get("format") != PIECE_FORMAT or not isinstance(doc.get("row"), dict):
            raise PieceError(f"{path} is not a piece of format {PIECE_FORMAT}; {redo}")
        if doc.get("name") != path.stem:
            raise PieceError(f"{path} holds the piece {doc.get('name')!r}, not {path.stem!r}; {redo}")
        if doc.get("settings") != self.settings:
            theirs = doc.get("settings") or {}
            differ = sorted(k for k in set(theirs) | set(self.settings) if theirs.get(k) != self.settings.get(k))
            raise PieceError(f"{path} was made with other settings ({', '.join(differ)} differ); {redo}, "
                             "or give the run another folder")
        return doc["row"]

    def describe(self) -> str:
        """One line: where the pieces are, how many were read and how many computed."""
        where = "kept nowhere" if self.folder is None else f"in {self.folder}"
        return f"pieces {where}: {self.read} read, {self.computed} computed"


__all__ = ["PIECE_FORMAT", "PieceError", "Pieces"]
