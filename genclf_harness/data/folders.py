"""The rules every data folder follows, whatever it holds: one place for them.

A data folder is ``<data root>/<name>/`` with a ``meta.json`` and one ``<split>.jsonl`` per split.
Its ``kind`` says what it holds: ``classification`` (the default; :mod:`genclf_harness.data.local`),
``tabular`` (a table, one ``<split>.csv`` or ``<split>.jsonl`` per split, read as a classification
data set; :mod:`~genclf_harness.data.tabular`), ``steps`` (:mod:`~genclf_harness.data.step_sets`),
``preference`` (:mod:`~genclf_harness.data.preference_sets`) or ``reasoning``
(:mod:`~genclf_harness.data.reasoning_sets`). The built-in folders ``processbench``, ``llmbar`` and
``gsm8k`` hold their kind by name and need no ``kind`` key. The shared keys mean the same in
every kind:

- ``splits``: a list or ``{name: row count}``; default: those of ``train``, ``validation``,
  ``val``, ``dev`` and ``test`` that have a file, else every ``*.jsonl`` (a step-labelled folder,
  whose splits are sources such as ``gsm8k`` and ``math``, takes every ``*.jsonl``);
- ``eval_split``: default ``test``, else ``validation``, else ``dev``, else the only split;
- ``fields``: ``{role: the row's field name}`` for the roles the kind knows.

Errors name the ``meta.json`` (or the folder) and what is wrong; keys a kind does not know
(``source``, ``license`` ...) are ignored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from genclf_harness.data.root import resolve_data_root
from genclf_harness.data.specs import DataError

META_FILE = "meta.json"
KINDS = ("classification", "tabular", "steps", "preference", "reasoning")
BUILT_IN_KINDS = {"processbench": "steps", "llmbar": "preference", "gsm8k": "reasoning"}
"""Folders whose kind is their name's (their meta.json predates ``kind``)."""
EVAL_SPLITS = ("test", "validation", "dev")
USUAL_SPLITS = frozenset({"train", "validation", "val", "dev", "test"})
FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Bad = Callable[[str], DataError]


def folder_kind(folder: Path) -> str | None:
    """The kind of a data folder (``None`` when it is none: no folder, or no readable meta.json
    and no built-in name); a meta.json without ``kind`` is ``classification``."""
    if not folder.is_dir():
        return None
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return BUILT_IN_KINDS.get(folder.name)
    if not isinstance(meta, dict):
        return None
    return meta.get("kind") or BUILT_IN_KINDS.get(folder.name, "classification")


def list_folders(kind: str, data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The folders of one kind under the data root, by name."""
    try:
        root = resolve_data_root(data_dir)
    except DataError:
        return []
    if root is None:
        return []
    return sorted(p.name for p in root.iterdir() if FOLDER_NAME.match(p.name) and folder_kind(p) == kind)


def open_folder(name: str, kind: str, data_dir: str | os.PathLike[str] | None, what: str) -> tuple[Path, dict[str, Any], Bad]:
    """``(folder, meta, bad)`` of the folder ``name`` of ``kind`` (``what`` names it in errors:
    "step-labelled data set"); ``bad(message)`` is a DataError naming its meta.json."""
    root = resolve_data_root(data_dir)
    if root is None:
        raise DataError(f"{what} {name!r}: it is read from $GENCLF_DATA_DIR/{name}/<split>.jsonl; set GENCLF_DATA_DIR "
                        "(or --metadata data_dir)")
    folder = root / name
    if not folder.is_dir():
        raise DataError(f"{what} {name!r}: {folder} is not a folder (is GENCLF_DATA_DIR right?)")
    meta_path = folder / META_FILE
    meta: Any = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{meta_path}: not valid JSON ({err}).") from None
        if not isinstance(meta, dict):
            raise DataError(f"{meta_path}: must be a JSON object, not {type(meta).__name__}.")
    elif BUILT_IN_KINDS.get(name) != kind:
        raise DataError(f"{meta_path}: missing; a {what} folder needs a meta.json with \"kind\": \"{kind}\".")

    def bad(message: str) -> DataError:
        return DataError(f"{meta_path}: {message}")

    found = meta.get("kind", BUILT_IN_KINDS.get(name))
    if found != kind:
        raise bad(f"'kind' is {found!r}; a {what} folder says \"kind\": \"{kind}\".")
    return folder, meta, bad


def discover_splits(value: Any, folder: Path, bad: Bad, *, usual_only: bool = True,
                    name: re.Pattern[str] | None = None, require_files: bool = True,
                    suffixes: tuple[str, ...] = (".jsonl",)) -> list[str]:
    """The split names: ``value`` (a list, or a mapping of names to counts) or, when it is None,
    the folder's ``*.jsonl`` files (``suffixes``: a table's ``.csv`` too; only the usual split names
    among them where any, if ``usual_only``); each named split must have its file (unless not
    ``require_files``: a classification split may come from the hub) and match ``name`` where given."""
    files = f"<split>{suffixes[0]}" + "".join(f" or <split>{suffix}" for suffix in suffixes[1:])
    if value is None:
        found = sorted({path.stem for suffix in suffixes for path in folder.glob(f"*{suffix}")})
        if not found:
            raise bad(f"names no 'splits' and {folder} holds no {files} file.")
        usual = [split for split in found if split in USUAL_SPLITS] if usual_only else []
        splits = usual or found
        _check_names(splits, name, bad)
    else:
        if isinstance(value, Mapping):
            value = list(value)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise bad(f"'splits' must be a non-empty list of split names, not {value!r}.")
        splits = list(value)
        _check_names(splits, name, bad)
        for split in splits if require_files else ():
            if not any((folder / f"{split}{suffix}").is_file() for suffix in suffixes):
                also = "".join(f" (or {suffix})" for suffix in suffixes[1:])
                raise bad(f"split {split!r} has no file {folder / (split + suffixes[0])}{also}.")
    return splits


def _check_names(splits: list[str], name: re.Pattern[str] | None, bad: Bad) -> None:
    for split in splits if name is not None else ():
        if not name.match(split):  # type: ignore[union-attr]
            raise bad(f"split {split!r}: a split name is letters, digits, '.' and '-' only (it ends a task name "
                      "genclf_<name>_<split>).")


def default_eval_split(splits: list[str], bad: Bad) -> str:
    """``test``, else ``validation``, else ``dev``, else the only split."""
    for split in EVAL_SPLITS:
        if split in splits:
            return split
    if len(splits) == 1:
        return splits[0]
    raise bad(f"has no test, validation or dev split among {', '.join(splits)}; name one as 'eval_split'.")


def chosen_split(meta: dict[str, Any], key: str, splits: list[str], default: str | None, bad: Bad) -> str | None:
    """``meta[key]`` (else ``default``), which must be one of ``splits``."""
    split = meta.get(key) or default
    if split is not None and split not in splits:
        raise bad(f"'{key}' is {split!r}, which is not one of its splits ({', '.join(splits)}).")
    return split


def mapped_fields(value: Any, roles: Iterable[str], bad: Bad) -> dict[str, str]:
    """``fields``: ``{role: row field name}`` for known roles only."""
    roles = tuple(roles)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise bad(f"'fields' must map {', '.join(roles)} to row field names, not {value!r}.")
    unknown = sorted(set(value) - set(roles))
    if unknown:
        raise bad(f"'fields' has unknown keys {unknown}; known: {', '.join(roles)}.")
    return dict(value)
