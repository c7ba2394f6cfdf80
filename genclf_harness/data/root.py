"""Where local data lives: ``$GENCLF_DATA_DIR`` or a ``data_dir`` argument."""

from __future__ import annotations

import os
from pathlib import Path

from genclf_harness.data.specs import DataError

DATA_DIR_ENV = "GENCLF_DATA_DIR"


def resolve_data_root(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local data root: the argument, else ``$GENCLF_DATA_DIR``, else None (hub only)."""
    raw = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not raw:
        return None
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise DataError(
            f"The data root {str(root)!r} (from {'data_dir' if data_dir is not None else DATA_DIR_ENV}) "
            "does not exist or is not a folder."
        )
    return root
