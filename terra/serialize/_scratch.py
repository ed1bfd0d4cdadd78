"""Where terra makes temporary paths for values that write themselves to files.

Kept apart from ``_files`` (which needs numpy) so that choosing the directory
when a store opens costs no imports.
"""

from __future__ import annotations

import os
import tempfile

_scratch: str | None = None


def scratch_dir() -> str:
    """The directory under which terra makes temporary paths for ``__terra_write__``/``__terra_read__``."""
    return _scratch if _scratch is not None else tempfile.gettempdir()


def set_scratch_dir(path: str | None) -> None:
    """Make temporary paths under ``path`` (None: the system temp dir)."""
    global _scratch
    _scratch = None if path is None else os.fspath(path)
