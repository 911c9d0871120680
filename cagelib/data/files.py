"""The input-file check the loaders share: a missing path and a directory get different, clear errors."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataFileError


def require_file(path: str | os.PathLike, expected: str) -> Path:
    """``path`` as a ``Path`` when it is a regular file. A missing path is ``FileNotFoundError``
    (``"<path>: no such file"``); a directory or another non-file is a ``DataFileError`` saying what it
    is and what was expected (``expected``: e.g. ``"a .bvh file"``)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise DataFileError(path, None, "is a directory, not a file", f"give the path of {expected}")
    if path.exists():
        raise DataFileError(path, None, "is not a regular file", f"give the path of {expected}")
    raise FileNotFoundError(f"{path}: no such file")
