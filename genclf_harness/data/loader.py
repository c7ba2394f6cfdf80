"""The one loader behind every task: a local folder of JSONL files, or else the public hub copy.

Local layout (as ``../shared/data``): ``<root>/<name>/<split>.jsonl`` plus ``<root>/<name>/meta.json``
with the label names. The root is ``GENCLF_DATA_DIR`` (or the ``data_dir`` argument). When the local
file is absent the hub copy named by the data set's spec is tried; when neither can be read the
error names both. A local file that exists but is malformed is an error at once (never silently
replaced by the hub copy).
"""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path
from typing import Any

from genclf_harness.data.jsonl import iter_jsonl, not_finite
from genclf_harness.data.root import DATA_DIR_ENV, resolve_data_root
from genclf_harness.data.specs import DataError, DatasetSpec, get_spec
from genclf_harness.data.tabular import is_tabular, load_tabular_split

__all__ = ["DATA_DIR_ENV", "load_split", "resolve_data_root"]

Row = dict[str, Any]


def load_split(name: str, split: str, data_dir: str | os.PathLike[str] | None = None) -> list[Row]:
    """Rows of one split, normalised to ``{"id", <input fields>, "label": int}``."""
    spec = get_spec(name, data_dir)
    if spec.splits and split not in spec.splits:
        raise DataError(
            f"Data set {name!r} has no split {split!r}; its splits are {', '.join(spec.splits)}."
        )
    if spec.folder is not None and is_tabular(spec.folder):  # a table: rows serialised (data.tabular)
        return load_tabular_split(spec, split)
    if spec.folder is not None:  # a local data set: the folder its spec was read from
        local_file: Path | None = Path(spec.folder) / f"{split}.jsonl"
    else:
        root = resolve_data_root(data_dir)
        local_file = root / name / f"{split}.jsonl" if root is not None else None
    if local_file is not None and local_file.is_file():
        rows = _read_local(spec, local_file)
    else:
        rows = _read_hub(spec, split, local_file)
    if not rows:
        where = local_file if local_file is not None and local_file.is_file() else spec.hub.path  # type: ignore[union-attr]
        raise DataError(f"Data set {name!r} split {split!r} is empty ({where}).")
    return rows


def _read_local(spec: DatasetSpec, path: Path) -> list[Row]:
    if spec.folder is None:  # a local data set's spec was built from this very meta.json
        _check_meta(spec, path.parent / "meta.json")
    rows: list[Row] = []
    for line_no, raw in iter_jsonl(path, DataError):
        where = f"{path}:{line_no}"
        if not isinstance(raw, dict):
            raise DataError(f"{where}: a row must be a JSON object.")
        rows.append(_normalise(spec, raw, where, default_id=f"{spec.name}-{line_no}"))
    return rows


def _check_meta(spec: DatasetSpec, meta_path: Path) -> None:
    if not meta_path.is_file():
        return
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataError(f"{meta_path}: not valid JSON ({err.msg}).") from None
    labels = meta.get("labels")
    if isinstance(labels, list):
        labels = [unicodedata.normalize("NFC", label) if isinstance(label, str) else label for label in labels]
    if labels is not None and tuple(labels) != spec.labels:
        raise DataError(
            f"{meta_path}: labels {labels} differ from the spec of {spec.name!r} {list(spec.labels)}."
        )


def _normalise(spec: DatasetSpec, raw: dict[str, Any], where: str, default_id: str) -> Row:
    row: Row = {"id": str(raw.get("id", default_id))}
    for field_name in spec.input_fields:
        value = raw.get(field_name)
        if not_finite(value):  # would become the text "nan" in the prompt
            raise DataError(f"{where}: field {field_name!r} is {value!r}, not a value; write the text, or leave "
                            "the row out.")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a number in the input (stars, a year) is text to the model
        if not isinstance(value, str):
            problem = "missing" if value is None else f"not a string ({type(value).__name__})"
            raise DataError(f"{where}: field {field_name!r} is {problem}.")
        row[field_name] = value
    row["label"] = _label_index(spec, raw.get("label"), where)
    return row


def _label_index(spec: DatasetSpec, value: Any, where: str) -> int:
    known = ", ".join(f"{i}={name}" for i, name in enumerate(spec.labels))
    if isinstance(value, bool) or value is None:
        raise DataError(f"{where}: field 'label' is {'missing' if value is None else repr(value)}; "
                        f"expected one of {known}.")
    if isinstance(value, str):
        name = unicodedata.normalize("NFC", value)
        if name in spec.labels:
            return spec.labels.index(name)
        raise DataError(f"{where}: label {value!r} is not a label of {spec.name!r} ({known}).")
    if not_finite(value):
        raise DataError(f"{where}: field 'label' is {value!r}, not a label; expected one of {known}.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 as some tools write integers
    if isinstance(value, int) and 0 <= value < spec.num_labels:
        return value
    if isinstance(value, int):
        raise DataError(f"{where}: label {value!r} is outside the labels of {spec.name!r} ({known}).")
    raise DataError(f"{where}: label {value!r} must be a label's index or its name ({known}).")


def _read_hub(spec: DatasetSpec, split: str, local_file: Path | None) -> list[Row]:
    hub = spec.hub
    local_note = (
        f"no local file {local_file}" if local_file is not None
        else f"no local root ({DATA_DIR_ENV} is not set)"
    )
    if hub is None:
        raise DataError(
            f"Cannot load data set {spec.name!r} split {split!r}: {local_note}, and the data set has no "
            f"hub copy (its meta.json names no 'hub'). Put the rows in {spec.name}/{split}.jsonl under "
            f"the data root."
        )
    hub_split = hub.splits.get(split, split)
    try:
        import datasets

        table = datasets.load_dataset(hub.path, hub.name, revision=hub.revision, split=hub_split)
    except Exception as err:  # noqa: BLE001 - any failure here means "not reachable"; both sources are named
        raise DataError(
            f"Cannot load data set {spec.name!r} split {split!r}: {local_note}, and the hub copy "
            f"{hub.path}{'/' + hub.name if hub.name else ''}@{hub.revision} (split {hub_split!r}) "
            f"could not be loaded ({type(err).__name__}: {err}). Set {DATA_DIR_ENV} to a folder "
            f"holding {spec.name}/{split}.jsonl, or allow hub access."
        ) from err
    rows: list[Row] = []
    for index, raw in enumerate(table):
        mapped = {ours: raw.get(hub.fields.get(ours, ours)) for ours in spec.input_fields}
        value = raw.get(hub.label_field)
        if hub.label_map is not None and value in hub.label_map:
            value = hub.label_map[value]
        mapped["label"] = value
        mapped["id"] = f"{spec.name}-{split}-{index}"
        rows.append(_normalise(spec, mapped, f"{hub.path} {hub_split}[{index}]", mapped["id"]))
    return rows
