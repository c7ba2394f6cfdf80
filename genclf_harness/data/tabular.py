"""Tables as classification data sets, with no code: UniPredict's serialisation of each row.

A folder ``<name>/`` under the data root holding one ``<split>.csv`` or ``<split>.jsonl`` per split
(feature columns plus a target column) and a ``meta.json``::

    {"kind": "tabular", "target": "diagnosis"}

is a classification data set like any other (`get_spec`, `load_split`, every ``genclf_<name>``
task and strategy, calibration, ``genclf-train``): its one input field ``row`` is the serialised
row (`genclf_harness.prompts.tabular`), its prompt UniPredict's. Optional keys:

- ``features``: the feature columns, in prompt order (default: every column but the target and
  ``id``); ``feature_descriptions``: ``{column: explanation}``; ``description``: the data set's
  description (UniPredict's "# Dataset description"); ``prompt``: ``"full"`` (default) or
  ``"light"`` (without the description); ``decimals``: rounding of numbers in a row (default 2);
- ``labels``: the label order of a categorical target (default: its values, sorted); ``label_words``;
  ``max_classes`` (default 10): a numeric target with more distinct training values is binned at
  the training split's quartiles into 4 classes (UniPredict's rule), bins closed on the right
  (``pandas.cut``): ``<q1``, ``q1 - q2``, ``q2 - q3``, ``>q3``, edges printed to 3 significant
  digits as theirs; the exact edges are `TabularSpec.bin_edges` and the spec's ``task``;
- ``splits``, ``eval_split``, ``train_split`` as every folder (`genclf_harness.data.folders`);
  ``task``; other keys (``source``, ``license`` ...) are ignored.

A column holds numbers or strings, not both; an integer column prints ``5``, a float column
``5.0`` (pandas' dtypes over the whole table). Errors name the file, line and column: a missing or
constant target, a mixed column, an empty cell, a missing file. Everything is read and checked
when the spec is built, before any model work.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genclf_harness.data.folders import META_FILE, chosen_split, default_eval_split, discover_splits
from genclf_harness.data.jsonl import iter_jsonl, not_finite
from genclf_harness.data.specs import DataError, DatasetSpec

TABULAR_KIND = "tabular"
SUFFIXES = (".csv", ".jsonl")
ROW_FIELD = "row"
DEFAULT_MAX_CLASSES = 10
ID_COLUMN = "id"
_INTEGER = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


@dataclass(frozen=True)
class TableSplit:
    """One split's rows: ids, the line of each row in its file, feature values and label indices."""

    dataset: str
    split: str
    path: Path
    ids: tuple[str, ...]
    lines: tuple[int, ...]
    features: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    """Per row, the feature values: int or float in numeric columns, str otherwise."""
    labels: tuple[int, ...]
    numeric: tuple[bool, ...] = field(default=())
    """Per feature, whether its column holds numbers."""


@dataclass(frozen=True)
class TabularSpec:
    """A tabular folder read and checked: its columns, labels, prompt and every split's rows."""

    name: str
    folder: Path
    target: str
    features: tuple[str, ...]
    labels: tuple[str, ...]
    label_words: tuple[str, ...]
    bin_edges: tuple[float, ...] | None
    """The exact training quartiles a numeric target was binned at (None: categorical)."""
    description: str | None
    feature_descriptions: Mapping[str, str]
    form: str
    decimals: int | None
    eval_split: str
    train_split: str
    tables: Mapping[str, TableSplit]
    task: str | None = None
    """meta.json's ``task`` (the results manifest's description); default: the target and its bins."""

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.tables)

    def dataset_spec(self) -> DatasetSpec:
        """The classification spec every genclf task reads: one input field, the serialised row."""
        from genclf_harness.prompts.tabular import dataset_annotations, genclf_instruction, genclf_template

        annotations = dataset_annotations(self.description, self.target, self.feature_descriptions)
        binned = "" if self.bin_edges is None else (
            f", binned at the training quartiles {', '.join(repr(e) for e in self.bin_edges)}")
        return DatasetSpec(
            name=self.name,
            task=self.task or f"{len(self.labels)}-way classification of the table column {self.target!r}{binned}",
            labels=self.labels, label_words=self.label_words, input_fields=(ROW_FIELD,),
            eval_split=self.eval_split, train_split=self.train_split,
            instruction=genclf_instruction(self.form, annotations),  # type: ignore[arg-type]
            template=genclf_template(self.labels, ROW_FIELD), hub=None, splits=self.splits,
            folder=str(self.folder.resolve()),
        )

    def rows(self, split: str) -> list[dict[str, Any]]:
        """The loader's rows of ``split``: ``{"id", "row": <serialised row>, "label": int}``."""
        from genclf_harness.prompts.tabular import serialize_row

        table = self.tables[split]
        return [{"id": row_id, ROW_FIELD: serialize_row(self.features, values, decimals=self.decimals), "label": label}
                for row_id, values, label in zip(table.ids, table.values, table.labels, strict=True)]


def is_tabular(folder: str | Path) -> bool:
    """Whether ``folder`` is a tabular data set (its meta.json says ``"kind": "tabular"``)."""
    from genclf_harness.data.folders import folder_kind

    return folder_kind(Path(folder)) == TABULAR_KIND


def tabular_spec(folder: str | Path) -> TabularSpec:
    """Read and check a tabular folder (cached while its meta.json and split files are unchanged)."""
    folder = Path(folder).resolve()
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.iterdir()) if p.is_file())
    return _cached(str(folder), stamp)


def tabular_spec_of(dataset: str, data_dir: str | None = None) -> TabularSpec:
    """The tabular spec of a data set by name; a DataError when it is not a tabular folder."""
    from genclf_harness.data import get_spec

    spec = get_spec(dataset, data_dir)
    if spec.folder is None or not is_tabular(spec.folder):
        raise DataError(f"data set {dataset!r} is not a tabular folder (a meta.json with \"kind\": \"tabular\").")
    return tabular_spec(spec.folder)


def read_split(dataset: str, split: str, data_dir: str | None = None) -> TableSplit:
    """One split of a tabular data set by name."""
    tspec = tabular_spec_of(dataset, data_dir)
    if split not in tspec.tables:
        raise DataError(f"Data set {dataset!r} has no split {split!r}; its splits are {', '.join(tspec.splits)}.")
    return tspec.tables[split]


def load_tabular_split(spec: DatasetSpec, split: str) -> list[dict[str, Any]]:
    """`genclf_harness.data.load_split` of a tabular data set."""
    return tabular_spec(spec.folder).rows(split)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=32)
def _cached(folder: str, _stamp: tuple[Any, ...]) -> TabularSpec:
    return _build(Path(folder))


def _build(folder: Path) -> TabularSpec:
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DataError(f"{meta_path}: missing; a tabular folder needs a meta.json naming its target.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{meta_path}: not valid JSON ({err}).") from None

    def bad(message: str) -> DataError:
        return DataError(f"{meta_path}: {message}")

    if not isinstance(meta, dict) or meta.get("kind") != TABULAR_KIND:
        raise bad("a tabular folder's meta.json is an object with \"kind\": \"tabular\".")
    target = meta.get("target")
    if not isinstance(target, str) or not target:
        raise bad("'target' must name the target column.")
    splits = discover_splits(meta.get("splits"), folder, bad, suffixes=SUFFIXES)
    eval_split = chosen_split(meta, "eval_split", splits, default_eval_split(splits, bad), bad)
    train_split = chosen_split(meta, "train_split", splits, "train" if "train" in splits else eval_split, bad)
    files = {split: _split_file(folder, split, bad) for split in dict.fromkeys([train_split, *splits])}
    raw = {split: _read(path) for split, path in files.items()}

    header = raw[train_split][0]
    for split, (columns, _) in raw.items():
        if target not in columns:
            raise DataError(f"{files[split]}: has no target column {target!r} (meta.json 'target'); its columns: "
                            f"{', '.join(columns)}.")
    features = _strings(meta.get("features"), "features", bad) if meta.get("features") is not None else [
        c for c in header if c not in (target, ID_COLUMN)]
    if not features or len(set(features)) != len(features):
        raise bad(f"no feature columns, or one named twice: {features} (columns of {files[train_split]}: "
                  f"{', '.join(header)}).")
    if target in features:
        raise bad(f"'features' includes the target column {target!r}.")
    for split, (columns, _) in raw.items():
        missing = [c for c in features if c not in columns]
        if missing:
            raise DataError(f"{files[split]}: has no column {missing[0]!r} (a feature); its columns: {', '.join(columns)}.")
    numeric = [_column_kind(raw, files, name) for name in features]
    integer = [is_num and _all_int(raw, name) for name, is_num in zip(features, numeric, strict=True)]

    from genclf_harness.prompts.tabular import DEFAULT_DECIMALS

    decimals = meta.get("decimals", DEFAULT_DECIMALS)
    if decimals is not None and (isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0):
        raise bad(f"'decimals' must be a non-negative integer or null, not {decimals!r}.")
    form = meta.get("prompt", "full")
    if form not in ("full", "light"):
        raise bad(f"'prompt' is {form!r}; use \"full\" (with the description) or \"light\".")
    descriptions = meta.get("feature_descriptions") or {}
    if not isinstance(descriptions, dict) or not all(isinstance(v, str) for v in descriptions.values()):
        raise bad("'feature_descriptions' must map feature columns to strings.")
    stray = [name for name in descriptions if name not in features]
    if stray:
        raise bad(f"'feature_descriptions' names {stray}, which are not feature columns.")
    description = meta.get("description")
    if description is not None and not isinstance(description, str):
        raise bad("'description' must be a string.")
    task = meta.get("task")
    if task is not None and not isinstance(task, str):
        raise bad("'task' must be a string.")

    labels, edges, label_of = _labels(meta, raw, files, target, train_split, bad)
    words = meta.get("label_words")
    label_words = _strings(words, "label_words", bad) if words is not None else [
        label.replace("_", " ").strip() or label for label in labels]
    if len(label_words) != len(labels) or len(set(label_words)) != len(label_words):
        raise bad(f"'label_words' must be {len(labels)} distinct words, one per label {labels}.")

    tables = {}
    for split in splits:
        columns, records = raw[split]
        ids, lines, values, row_labels = [], [], [], []
        for index, (line, record) in enumerate(records):
            where = f"{files[split]}:{line}"
            row_values = []
            for name, is_int in zip(features, integer, strict=True):
                value = record.get(name)
                if value is None:
                    raise DataError(f"{where}: column {name!r} (column {columns.index(name) + 1}) is empty; a tabular "
                                    "row needs every feature (fill it in, or leave the row out).")
                row_values.append(float(value) if isinstance(value, int) and not is_int else value)
            ids.append(str(record[ID_COLUMN]) if record.get(ID_COLUMN) is not None else f"{folder.name}-{split}-{index}")
            lines.append(line)
            values.append(tuple(row_values))
            row_labels.append(label_of(record.get(target), where))
        if not records:
            raise DataError(f"{files[split]}: holds no rows.")
        if len(set(ids)) != len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"{files[split]}: the id {twice!r} names two rows (column {ID_COLUMN!r}).")
        tables[split] = TableSplit(folder.name, split, files[split], tuple(ids), tuple(lines), tuple(features),
                                   tuple(values), tuple(row_labels), tuple(numeric))
    return TabularSpec(folder.name, folder, target, tuple(features), tuple(labels), tuple(label_words), edges,
                       description, dict(descriptions), form, decimals, eval_split, train_split, tables, task)


def _labels(meta: dict[str, Any], raw: Mapping[str, Any], files: Mapping[str, Path], target: str, train_split: str,
            bad: Any) -> tuple[list[str], tuple[float, ...] | None, Any]:
    """Label names, bin edges (or None) and ``label_of(value, where) -> index``."""
    train_values = [(line, r.get(target)) for line, r in raw[train_split][1]]
    for line, value in train_values:
        if value is None:
            raise DataError(f"{files[train_split]}:{line}: the target column {target!r} is empty.")
    numbers = [v for _, v in train_values if not isinstance(v, str)]
    distinct = {v for _, v in train_values}
    if len(distinct) < 2:
        raise DataError(f"{files[train_split]}: the target column {target!r} is constant "
                        f"({next(iter(distinct), None)!r} in every row); there is nothing to classify.")
    if 0 < len(numbers) < len(train_values):
        _column_kind(raw, files, target)  # raises, naming the line where the kinds first differ
    max_classes = meta.get("max_classes", DEFAULT_MAX_CLASSES)
    if isinstance(max_classes, bool) or not isinstance(max_classes, int) or max_classes < 2:
        raise bad(f"'max_classes' must be an integer of at least 2, not {max_classes!r}.")
    if meta.get("labels") is None and numbers and len(distinct) > max_classes:
        import numpy as np  # here only: reading a table's files needs no numpy

        edges = tuple(float(e) for e in np.unique(np.quantile(np.array(numbers, dtype=np.float64), [0.25, 0.5, 0.75])))
        names = _bin_names(edges)

        def binned(value: Any, where: str) -> int:
            if value is None or isinstance(value, str):
                raise DataError(f"{where}: the target column {target!r} is {value!r}, not a number to bin.")
            return int(np.searchsorted(edges, float(value), side="left"))

        return names, edges, binned
    found = {_label_text(v) for split in raw for _, r in raw[split][1] if (v := r.get(target)) is not None}
    if meta.get("labels") is not None:
        labels = _strings(meta["labels"], "labels", bad)
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise bad(f"'labels' must name at least two distinct labels, not {labels}.")
    else:
        labels = sorted(found, key=lambda t: (0, float(t), t) if _FLOAT.match(t) else (1, 0.0, t))

    def label_of(value: Any, where: str) -> int:
        if value is None:
            raise DataError(f"{where}: the target column {target!r} is empty.")
        text = _label_text(value)
        if text not in labels:
            raise DataError(f"{where}: target {text!r} is not one of the labels {labels} (meta.json 'labels').")
        return labels.index(text)

    return labels, None, label_of


def _bin_names(edges: tuple[float, ...]) -> list[str]:
    """UniPredict's bin names (``<q1``, ``q1 - q2`` ..., ``>q3``), edges to 3 significant digits,
    more where two would print alike."""
    for digits in range(3, 18):
        shown = [repr(_significant(e, digits)) for e in edges]
        if len(set(shown)) == len(shown):
            break
    inner = [f"{a} - {b}" for a, b in itertools.pairwise(shown)]
    return [f"<{shown[0]}", *inner, f">{shown[-1]}"]


def _significant(value: float, digits: int) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _label_text(value: Any) -> str:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _column_kind(raw: Mapping[str, Any], files: Mapping[str, Path], name: str) -> bool:
    """Whether column ``name`` holds numbers (in every split); a DataError naming the first line whose
    value is of the other kind."""
    first: tuple[bool, str] | None = None
    for split, (columns, records) in raw.items():
        for line, record in records:
            value = record.get(name)
            if value is None:
                continue
            is_number = not isinstance(value, str)
            if first is None:
                first = (is_number, f"{files[split]}:{line}")
            elif first[0] != is_number:
                kinds = ("a number", "a string") if is_number else ("a string", "a number")
                raise DataError(f"{files[split]}:{line}: column {name!r} (column {columns.index(name) + 1}) holds "
                                f"{value!r}, {kinds[0]}, where {first[1]} holds {kinds[1]}; a column holds numbers "
                                "or strings, not both.")
    return bool(first and first[0])


def _all_int(raw: Mapping[str, Any], name: str) -> bool:
    return all(isinstance(r.get(name), int) for _, records in raw.values() for _, r in records if r.get(name) is not None)


def _split_file(folder: Path, split: str, bad: Any) -> Path:
    found = [folder / f"{split}{suffix}" for suffix in SUFFIXES if (folder / f"{split}{suffix}").is_file()]
    if not found:
        raise bad(f"split {split!r} has no file {folder / (split + '.csv')} (or .jsonl).")
    if len(found) > 1:
        raise bad(f"split {split!r} has two files, {found[0].name} and {found[1].name}; keep one.")
    return found[0]


@functools.lru_cache(maxsize=64)
def _read_cached(path: str, _stamp: tuple[int, int]) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    return _read_csv(Path(path)) if path.endswith(".csv") else _read_jsonl(Path(path))


def _read(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    stat = path.stat()
    return _read_cached(str(path), (stat.st_mtime_ns, stat.st_size))


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    records: list[tuple[int, dict[str, Any]]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}: empty; a table starts with a header line of column names.")
            duplicate = [c for i, c in enumerate(header) if c in header[:i]]
            if duplicate:
                raise DataError(f"{path}:1: column {duplicate[0]!r} appears twice in the header.")
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(header):
                    raise DataError(f"{path}:{reader.line_num}: {len(cells)} values for {len(header)} columns.")
                records.append((reader.line_num, {c: _cell(v) for c, v in zip(header, cells, strict=True)}))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 ({err.reason} at byte {err.start}); save the file as UTF-8.") from None
    return header, records


def _cell(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    if _INTEGER.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def _read_jsonl(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    header: dict[str, None] = {}
    records = []
    for line, row in iter_jsonl(path, DataError):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line}: a row must be a JSON object.")
        record = {}
        for key, value in row.items():
            if isinstance(value, (list, dict)) or not_finite(value):
                raise DataError(f"{path}:{line}: column {key!r} is {value!r}, not a number or a string.")
            record[key] = str(value) if isinstance(value, bool) else value
            header.setdefault(key, None)
        records.append((line, record))
    return list(header), records


def _strings(value: Any, key: str, bad: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise bad(f"'{key}' must be a list of non-empty strings, not {value!r}.")
    return [unicodedata.normalize("NFC", v) for v in value]
