"""Classification data sets of your own: a folder of JSONL files and a ``meta.json``, no code.

Under the data root (``$GENCLF_DATA_DIR``, or a ``data_dir`` argument)::

    <name>/meta.json        {"labels": ["negative", "positive"]}
    <name>/<split>.jsonl    one JSON object per line: the input fields and "label"
                            (a label's index or its name)

Such a data set works wherever a built-in one does: ``genclf-eval --tasks genclf_<name>``, the
prompt strategies, calibration, ``genclf-train`` (``data.dataset: <name>``). Only ``labels`` is
required in ``meta.json``; every other key has a default:

- ``label_words``: what the model answers, one per label (default: the label names, ``_`` read as
  a space: ``not_entailment`` -> ``not entailment``);
- ``input_fields``: the row fields that make the input (default: the string fields of the first row
  of the evaluation split, in order, leaving out ``id`` and ``label``);
- ``template``: the input as the model sees it, ending with the answer cue, with ``{field}``
  placeholders (default: a ``Field: {field}`` line per input field, then ``Answer:``);
- ``instruction``: the line before the examples, ``{labels}`` standing for the label words
  (default: ``Classify each input as {labels}.``);
- ``splits``: the split names, a list or ``{name: row count}`` (default: those of ``train``,
  ``validation``, ``val``, ``dev`` and ``test`` that have a ``.jsonl`` file, else every ``*.jsonl``
  file; other files in the folder, such as ``predictions.jsonl``, are then no split);
- ``eval_split``: default ``test``, else ``validation``, else ``dev``, else the only split;
- ``train_split``: default ``train``; without one it is the evaluation split, and lm-eval then
  draws few-shot demonstrations from the other evaluated documents (never the document itself),
  and inductive calibration is left out;
- ``task``: a short description for the results manifest (default ``K-way classification``);
- ``definitions``: ``{label name: a short definition}``, for prompt strategies that state them;
- ``hypothesis_template``: for NLI classifiers (``genclf-nli``), the hypothesis with ``{}`` for
  the label word (default: the classifier's, ``This example is {}.``);
- ``hub``: ``{"path", "revision", "name", "splits", "fields", "label_field", "label_map"}`` (see
  ``HubSource``), read where a split has no local file; without it the data set is local only.

``kind`` is ``classification`` (the default); a table says ``tabular`` (one ``<split>.csv`` or
``<split>.jsonl`` per split, its rows serialised as UniPredict's prompts:
:mod:`genclf_harness.data.tabular`); a folder of step-labelled solutions says ``steps``
(:mod:`genclf_harness.data.step_sets`), one of preference pairs ``preference``
(:mod:`genclf_harness.data.preference_sets`), one of reasoning problems ``reasoning``
(:mod:`genclf_harness.data.reasoning_sets`). Keys it does not know (``source``, ``license`` ...) are kept out of the spec without complaint.
A built-in name (``sst2`` ...) always means the built-in spec; its ``meta.json`` must agree on
the labels.
"""

from __future__ import annotations

import functools
import json
import os
import string
import unicodedata
from pathlib import Path
from typing import Any

from genclf_harness.data.folders import FOLDER_NAME, default_eval_split, discover_splits
from genclf_harness.data.jsonl import iter_jsonl
from genclf_harness.data.root import resolve_data_root
from genclf_harness.data.specs import SPECS, DataError, DatasetSpec, HubSource

META_FILE = "meta.json"
DEFAULT_INSTRUCTION = "Classify each input as {labels}."
DEFAULT_ANSWER_CUE = "Answer:"
_NAME = FOLDER_NAME
_HUB_KEYS = ("path", "revision", "name", "splits", "fields", "label_field", "label_map")


OTHER_FAMILIES: dict[str, str] = {
    "llmbar": "pairwise preference pairs, read by the genclf_llmbar* tasks",
    "processbench": "step-labelled solutions, read by the genclf_processbench_* tasks",
    "gsm8k": "reasoning problems, read by the genclf_gsm8k_* verifier tasks and genclf-bench bon",
}
"""Folders of the data root that the verifier families read by name: never classification data sets."""


_FOUND_ELSEWHERE: dict[str, Path] = {}
"""name -> folder of the local data sets found under an explicit ``data_dir`` in this process."""


def local_spec(name: str, data_dir: str | os.PathLike[str] | None = None) -> DatasetSpec | None:
    """The spec of the local data set ``name``, or None when the data root has no such folder.

    A data set found under an explicit ``data_dir`` (a task's ``dataset_kwargs`` or ``--metadata``)
    is remembered by name, and later lookups without one (answer parsing, rewards, the manifest)
    get that folder, even where ``$GENCLF_DATA_DIR`` has a data set of the same name: the explicit
    root wins for the whole run. The spec's ``folder`` (in the results manifest) says which was read.
    """
    if name in SPECS or not _NAME.match(name):
        return None
    if name in OTHER_FAMILIES:
        raise DataError(f"data set {name!r} holds {OTHER_FAMILIES[name]}; it is not a classification data set")
    remembered = _FOUND_ELSEWHERE.get(name) if data_dir is None else None
    if remembered is not None and (remembered / META_FILE).is_file():
        folder = remembered
    else:
        root = resolve_data_root(data_dir)
        folder = root / name if root is not None else None  # type: ignore[assignment]
        if folder is None or not (folder / META_FILE).is_file():
            return None
        if data_dir is not None:
            _FOUND_ELSEWHERE[name] = folder
    # Cached per file state: a task, its manifest and its reward function all ask for the spec.
    return _cached_spec(str(folder.resolve()), (folder / META_FILE).stat().st_mtime_ns, folder.stat().st_mtime_ns)


def list_local(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The local data sets under the data root whose ``meta.json`` names labels (built-ins left out)."""
    try:
        root = resolve_data_root(data_dir)
    except DataError:
        return []
    if root is None:
        return []
    names = []
    for meta_path in sorted(root.glob(f"*/{META_FILE}")):
        name = meta_path.parent.name
        if name in SPECS or name in OTHER_FAMILIES or not _NAME.match(name):
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            names.append(name)  # listed, so that asking for it reports what is wrong with it
            continue
        if isinstance(meta, dict) and (meta.get("labels") is not None or meta.get("kind") == "tabular"):
            names.append(name)
    return names


@functools.lru_cache(maxsize=64)
def _cached_spec(folder: str, _meta_mtime: int, _folder_mtime: int) -> DatasetSpec:
    return spec_from_folder(Path(folder))


def spec_from_folder(folder: str | os.PathLike[str]) -> DatasetSpec:
    """Build a data set's spec from ``<folder>/meta.json`` and its files (the module doc says how)."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DataError(f"{meta_path}: missing; a local data set needs a meta.json naming its labels.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{meta_path}: not valid JSON ({err}).") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: must be a JSON object, not {type(meta).__name__}.")

    def bad(message: str) -> DataError:
        return DataError(f"{meta_path}: {message}")

    kind = meta.get("kind", "classification")
    if kind == "tabular":  # a table: its rows serialised as UniPredict's prompts (genclf_harness.data.tabular)
        from genclf_harness.data.tabular import tabular_spec

        return tabular_spec(folder).dataset_spec()
    if kind == "steps":
        raise bad(f"holds step-labelled solutions (\"kind\": \"steps\"), not a classification data set; its "
                  f"tasks are genclf_{folder.name}_<split> and the group genclf_{folder.name}.")
    if kind == "preference":
        raise bad(f"holds preference pairs (\"kind\": \"preference\"), not a classification data set; its "
                  f"tasks are genclf_{folder.name} (pointwise) and genclf_{folder.name}_pairwise.")
    if kind == "reasoning":
        raise bad(f"holds reasoning problems (\"kind\": \"reasoning\"), not a classification data set; its "
                  f"tasks are genclf_{folder.name}_verify and genclf_{folder.name}_bon (genclf-bench bon --task "
                  f"{folder.name}).")
    if kind != "classification":
        raise bad(f"'kind' is {kind!r}; known kinds: \"classification\" (the default), \"tabular\", \"steps\", "
                  "\"preference\", \"reasoning\".")
    labels = meta.get("labels")
    if labels is None:
        raise bad("has no 'labels' (the label names in index order); without them it is not a "
                  "classification data set.")
    labels = _strings(labels, "labels", bad)
    if len(labels) < 2:
        raise bad(f"'labels' must name at least two labels, not {len(labels)}.")
    _distinct(labels, "labels", bad)

    label_words = meta.get("label_words")
    if label_words is None:
        label_words = [label.replace("_", " ").strip() or label for label in labels]
    else:
        label_words = _strings(label_words, "label_words", bad)
        if len(label_words) != len(labels):
            raise bad(f"'label_words' has {len(label_words)} words for {len(labels)} labels.")
        padded = [word for word in label_words if word != word.strip()]
        if padded:
            raise bad(f"'label_words' {padded} begin or end with whitespace; the prompt puts one space "
                      "before the answer itself.")
    _distinct(label_words, "label_words", bad)

    splits = discover_splits(meta.get("splits"), folder, bad, require_files=False)
    eval_split = meta.get("eval_split") or default_eval_split(splits, bad)
    train_split = meta.get("train_split") or ("train" if "train" in splits else eval_split)
    for key, split in (("eval_split", eval_split), ("train_split", train_split)):
        if split not in splits:
            raise bad(f"'{key}' is {split!r}, which is not one of its splits ({', '.join(splits)}).")

    input_fields = meta.get("input_fields")
    if input_fields is None:
        input_fields = _infer_input_fields(folder / f"{eval_split}.jsonl", bad)
    else:
        input_fields = _strings(input_fields, "input_fields", bad)
        if not input_fields:
            raise bad("'input_fields' is empty.")
        if "label" in input_fields:
            raise bad("'input_fields' must not include 'label'.")
    template = meta.get("template")
    if template is None:
        template = "\n".join(f"{_title(f)}: {{{f}}}" for f in input_fields) + "\n" + DEFAULT_ANSWER_CUE
    _check_placeholders(template, "template", set(input_fields), bad)
    instruction = meta.get("instruction", DEFAULT_INSTRUCTION)
    _check_placeholders(instruction, "instruction", {"labels"}, bad)

    definitions = meta.get("definitions") or {}
    if not isinstance(definitions, dict) or not all(isinstance(v, str) for v in definitions.values()):
        raise bad("'definitions' must map label names to strings.")
    unknown = [key for key in definitions if key not in labels]
    if unknown:
        raise bad(f"'definitions' names {unknown}, which are not labels ({', '.join(labels)}).")

    hypothesis = meta.get("hypothesis_template")
    if hypothesis is not None and (not isinstance(hypothesis, str) or "{}" not in hypothesis):
        raise bad(f"'hypothesis_template' must be a string with {{}} where the label word goes, got {hypothesis!r}.")

    task = meta.get("task") or f"{len(labels)}-way classification"
    if not isinstance(task, str):
        raise bad("'task' must be a string.")
    hub = _hub(meta.get("hub"), bad)
    try:
        return DatasetSpec(
            name=folder.name,
            task=task,
            labels=tuple(labels),
            label_words=tuple(label_words),
            input_fields=tuple(input_fields),
            eval_split=eval_split,
            train_split=train_split,
            instruction=instruction,
            template=template,
            hub=hub,
            splits=tuple(splits),
            definitions=dict(definitions),
            folder=str(folder.resolve()),
            hypothesis_template=hypothesis,
        )
    except ValueError as err:
        raise bad(str(err)) from None


def _strings(value: Any, key: str, bad) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise bad(f"'{key}' must be a list of non-empty strings, not {value!r}.")
    # One Unicode form (NFC), so a label typed on another system still matches the rows' labels.
    return [unicodedata.normalize("NFC", v) for v in value]


def _distinct(values: list[str], key: str, bad) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise bad(f"'{key}' names {value!r} twice.")
        seen.add(value)


def _infer_input_fields(path: Path, bad) -> list[str]:
    if not path.is_file():
        raise bad(f"names no 'input_fields', and {path} (to infer them from) is missing.")
    for line_no, row in iter_jsonl(path, DataError):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line_no}: a row must be a JSON object.")
        fields = [key for key, value in row.items() if key not in ("id", "label") and isinstance(value, str)]
        if not fields:
            raise bad(f"names no 'input_fields', and the first row of {path} has no string field "
                      "besides 'id' and 'label'.")
        return fields
    raise bad(f"names no 'input_fields', and {path} (to infer them from) has no rows.")


def _title(field_name: str) -> str:
    words = field_name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _check_placeholders(text: Any, key: str, allowed: set[str], bad) -> None:
    if not isinstance(text, str) or not text.strip():
        raise bad(f"'{key}' must be a non-empty string.")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as err:
        raise bad(f"'{key}' is not a valid template ({err}); write a literal brace as {{{{ or }}}}.") from None
    unknown = sorted({name for name in names if name not in allowed})
    if unknown:
        raise bad(f"'{key}' has placeholders {unknown}; it may use only {sorted(allowed)}.")


def _hub(value: Any, bad) -> HubSource | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        raise bad("'hub' must be an object with at least a 'path' (the hub data set id).")
    unknown = sorted(set(value) - set(_HUB_KEYS))
    if unknown:
        raise bad(f"'hub' has unknown keys {unknown}; known: {', '.join(_HUB_KEYS)}.")
    kwargs = dict(value)
    kwargs.setdefault("revision", "main")
    if kwargs.get("label_map") is not None:
        try:
            kwargs["label_map"] = {int(k): int(v) for k, v in kwargs["label_map"].items()}
        except (AttributeError, TypeError, ValueError):
            raise bad("'hub.label_map' must map the hub's integer labels to label indices.") from None
    return HubSource(**kwargs)
