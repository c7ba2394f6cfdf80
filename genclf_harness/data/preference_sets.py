"""Preference pairs of your own: a folder and a ``meta.json``, no code.

Under the data root (``$GENCLF_DATA_DIR``, or a ``data_dir`` argument)::

    <name>/meta.json        {"kind": "preference"}  (the folder ``llmbar`` needs no kind)
    <name>/<split>.jsonl    one pair per line, in one of two shapes

- **an instruction and two outputs** (LLMBar's shape): ``instruction``, ``output_1``, ``output_2``
  and ``label``, the better one (``1``/``2``, ``output_1``/``output_2``, or a value that
  ``label_values`` maps to 1 or 2, e.g. ``{"A": 1, "B": 2}``); optional ``id`` and ``subset``;
- **two full dialogues** (``chosen``, ``rejected``; HH-RLHF's and TRL's shape): each one string
  with turn markers (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) or a list of ``{"role", "content"}``
  messages. The prompt is their shared head, split off exactly: the longest common beginning cut
  back to the start of the last assistant turn both share (a message boundary for message lists,
  the last ``assistant_marker`` for strings). The two replies after it are the outputs. So that a
  judge's position bias cannot pass for skill, the chosen reply is ``output_1`` on the odd lines
  of the file and ``output_2`` on the even ones (line numbers count from 1).

``meta.json`` keys, all optional but ``kind`` (same names and rules as a classification folder's
where they mean the same):

- ``fields``: where each value is in a row, any of ``instruction``, ``output_1``, ``output_2``,
  ``label``, ``id``, ``subset``, ``chosen``, ``rejected`` (defaults: those names; ``prompt`` is
  also read as the instruction);
- ``label_values``: extra label values and the output (1 or 2) each means;
- ``assistant_marker``, ``user_marker``: the turn markers of string dialogues (defaults
  ``"\\n\\nAssistant:"`` and ``"\\n\\nHuman:"``);
- ``splits``, ``eval_split`` as in a classification folder (default: every ``*.jsonl``; the
  evaluated one ``test``, else ``validation``, else ``dev``, else the only one).

A bad row (a missing or non-string field, an unknown label, dialogues that share no prompt,
identical outputs) names its file, line and field before any model work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genclf_harness.data.folders import (
    chosen_split,
    default_eval_split,
    discover_splits,
    folder_kind,
    mapped_fields,
    open_folder,
)
from genclf_harness.data.jsonl import iter_jsonl
from genclf_harness.data.specs import DataError

PREFERENCE_KIND = "preference"
LLMBAR = "llmbar"
NATURAL = "natural"
ADVERSARIAL = "adversarial"
_FIELDS = ("instruction", "output_1", "output_2", "label", "id", "subset", "chosen", "rejected")
_LABEL_NAMES: dict[Any, int] = {1: 1, 2: 2, "1": 1, "2": 2, "output_1": 1, "output_2": 2}


class PreferenceDataError(DataError):
    """Malformed preference data; the message names the file, line and field."""


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """One instruction with two outputs; ``label`` is the better one (1 or 2)."""

    id: str
    instruction: str
    output_1: str
    output_2: str
    label: int
    subset: str = ""
    prompt_messages: tuple[dict[str, str], ...] | None = None
    """The shared head of two message-list dialogues, as messages (None otherwise)."""

    def __post_init__(self) -> None:
        if self.label not in (1, 2) or isinstance(self.label, bool):
            raise PreferenceDataError(f"pair {self.id!r}: label {self.label!r} is not 1 or 2 (output_1 or output_2)")

    @property
    def group(self) -> str:
        """``natural`` or ``adversarial`` (LLMBar's four adversarial subsets pooled)."""
        return ADVERSARIAL if self.subset.startswith(ADVERSARIAL) else NATURAL if self.subset == NATURAL else self.subset

    def output(self, which: int) -> str:
        return self.output_1 if which == 1 else self.output_2


@dataclass(frozen=True)
class PreferenceSetSpec:
    """How a folder's (or a bare file's) rows are read."""

    name: str
    folder: str | None = None
    splits: tuple[str, ...] = ()
    eval_split: str = "test"
    fields: dict[str, str] = field(default_factory=dict)
    label_values: dict[Any, int] = field(default_factory=dict)
    assistant_marker: str = "\n\nAssistant:"
    user_marker: str = "\n\nHuman:"

    def field(self, key: str) -> str:
        return self.fields.get(key, key)

    def path(self, split: str) -> Path:
        return Path(self.folder or ".") / f"{split}.jsonl"


PLAIN = PreferenceSetSpec("file")
"""The default reading of a bare JSONL file: LLMBar's field names."""


def is_preference_set(folder: Path) -> bool:
    """Whether ``folder`` holds preference pairs (``llmbar``, or ``"kind": "preference"``)."""
    return folder_kind(folder) == PREFERENCE_KIND


def preference_set_spec(name: str, data_dir: str | os.PathLike[str] | None = None) -> PreferenceSetSpec:
    """The spec of the preference folder ``name`` under the data root; a DataError naming what is wrong."""
    folder, meta, bad = open_folder(name, PREFERENCE_KIND, data_dir, "preference data set")
    splits = discover_splits(meta.get("splits"), folder, bad)
    eval_split = chosen_split(meta, "eval_split", splits, None, bad) or default_eval_split(splits, bad)
    fields = mapped_fields(meta.get("fields"), _FIELDS, bad)
    label_values = meta.get("label_values") or {}
    if not isinstance(label_values, dict) or not all(v in (1, 2) and not isinstance(v, bool) for v in label_values.values()):
        raise bad(f"'label_values' must map label values to 1 or 2 (the better output), not {label_values!r}.")
    markers = {}
    for key in ("assistant_marker", "user_marker"):
        value = meta.get(key, getattr(PLAIN, key))
        if not isinstance(value, str) or not value.strip():
            raise bad(f"'{key}' must be a non-empty string, not {value!r}.")
        markers[key] = value
    return PreferenceSetSpec(name, str(folder.resolve()), tuple(splits), eval_split, fields, dict(label_values),
                             **markers)


def load_preference_pairs(name: str, split: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                          limit: int | None = None) -> list[PreferencePair]:
    """The pairs of one split (default: the evaluated one) of the preference folder ``name``."""
    spec = preference_set_spec(name, data_dir)
    split = split or spec.eval_split
    if split not in spec.splits:
        raise DataError(f"preference data set {name!r} has no split {split!r} (splits: {', '.join(spec.splits)}; "
                        f"under {spec.folder})")
    return read_pair_file(spec.path(split), spec, limit)


def read_pair_file(path: str | os.PathLike[str], spec: PreferenceSetSpec = PLAIN,
                   limit: int | None = None) -> list[PreferencePair]:
    """Preference pairs from one JSONL file read by ``spec``; an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise PreferenceDataError(f"{path} does not exist")
    pairs: list[PreferencePair] = []
    for line_no, raw in iter_jsonl(path, PreferenceDataError):
        if limit is not None and len(pairs) >= limit:
            break
        pairs.append(parse_row(raw, f"{path}:{line_no}", spec, line_no))
    if not pairs:
        raise PreferenceDataError(f"{path}: no preference pairs")
    return pairs


def parse_row(raw: Any, where: str, spec: PreferenceSetSpec = PLAIN, line_no: int = 1) -> PreferencePair:
    """One row in either shape; errors name ``where`` and the field."""
    if not isinstance(raw, dict):
        raise PreferenceDataError(f"{where}: a row must be a JSON object, got {type(raw).__name__}")
    identifier = raw.get(spec.field("id"), where)
    subset = raw.get(spec.field("subset"), "")
    if spec.field("chosen") in raw or spec.field("rejected") in raw:
        instruction, chosen, rejected, messages = split_dialogues(
            _present(raw, spec.field("chosen"), where), _present(raw, spec.field("rejected"), where), where, spec)
        label = 1 if line_no % 2 == 1 else 2
        first, second = (chosen, rejected) if label == 1 else (rejected, chosen)
        return PreferencePair(str(identifier), instruction, first, second, label, str(subset), messages)
    instruction_field = spec.field("instruction")
    if instruction_field not in raw and "instruction" not in spec.fields and "prompt" in raw:
        instruction_field = "prompt"
    texts = [_text(raw, name, where) for name in (instruction_field, spec.field("output_1"), spec.field("output_2"))]
    label_field = spec.field("label")
    value = raw.get(label_field)
    label = spec.label_values.get(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if label is None and not isinstance(value, bool):
        label = _LABEL_NAMES.get(value) if isinstance(value, (str, int)) else None
    if label is None:
        problem = "missing" if value is None else f"{value!r}, an unknown label"
        extra = f", or one of {sorted(map(str, spec.label_values))}" if spec.label_values else ""
        raise PreferenceDataError(f"{where}: field {label_field!r} is {problem}; expected 1 or 2 (or "
                                  f"'output_1'/'output_2'{extra})")
    if texts[1] == texts[2]:
        raise PreferenceDataError(f"{where}: the two outputs are identical; a pair needs two different outputs")
    return PreferencePair(str(identifier), texts[0], texts[1], texts[2], label, str(subset))


def _present(raw: dict[str, Any], name: str, where: str) -> Any:
    if name not in raw or raw[name] is None:
        raise PreferenceDataError(f"{where}: field {name!r} is missing (a chosen/rejected pair needs both)")
    return raw[name]


def _text(raw: dict[str, Any], name: str, where: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        problem = "missing" if value is None else f"not a string ({type(value).__name__})"
        raise PreferenceDataError(f"{where}: field {name!r} is {problem}")
    return value


# -- chosen/rejected dialogues ---------------------------------------------------------------------


def split_dialogues(chosen: Any, rejected: Any, where: str,
                    spec: PreferenceSetSpec = PLAIN) -> tuple[str, str, str, tuple[dict[str, str], ...] | None]:
    """``(instruction, chosen reply, rejected reply, prompt messages or None)`` from two dialogues
    that share their head: strings with turn markers, or lists of role/content messages."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        return (*_split_strings(chosen, rejected, where, spec), None)
    if isinstance(chosen, list) and isinstance(rejected, list):
        return _split_messages(chosen, rejected, where)
    raise PreferenceDataError(f"{where}: fields {spec.field('chosen')!r} and {spec.field('rejected')!r} must both be "
                              f"strings or both lists of messages, got {type(chosen).__name__} and "
                              f"{type(rejected).__name__}")


def _split_strings(chosen: str, rejected: str, where: str, spec: PreferenceSetSpec) -> tuple[str, str, str]:
    if chosen == rejected:
        raise PreferenceDataError(f"{where}: the chosen and rejected dialogues are identical")
    shared = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        shared += 1
    marker = spec.assistant_marker
    cut = chosen.rfind(marker, 0, shared)
    if cut < 0:
        raise PreferenceDataError(f"{where}: the chosen and rejected dialogues share no prompt (their common beginning "
                                  f"holds no assistant turn {marker!r}); set 'assistant_marker' in meta.json if "
                                  "the turns are marked otherwise")
    head = chosen[:cut]
    replies = [text[cut + len(marker):].strip() for text in (chosen, rejected)]
    if not all(replies):
        raise PreferenceDataError(f"{where}: a dialogue has an empty reply after the shared prompt")
    if replies[0] == replies[1]:
        raise PreferenceDataError(f"{where}: the chosen and rejected replies are identical")
    user = spec.user_marker
    turns = head.strip()
    single = head.count(user.strip()) == 1 and marker.strip() not in head
    if single and turns.startswith(user.strip()):
        turns = turns[len(user.strip()):].strip()
    if not turns:
        raise PreferenceDataError(f"{where}: the shared prompt is empty")
    return turns, replies[0], replies[1]


def _split_messages(chosen: list[Any], rejected: list[Any], where: str
                    ) -> tuple[str, str, str, tuple[dict[str, str], ...]]:
    for name, dialogue in (("chosen", chosen), ("rejected", rejected)):
        for index, message in enumerate(dialogue):
            if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                    and isinstance(message.get("content"), str)):
                raise PreferenceDataError(f"{where}: {name}[{index}] must be a message {{\"role\": ..., "
                                          f"\"content\": ...}} with string values, got {message!r}")
    shared = 0
    for a, b in zip(chosen, rejected):
        if (a["role"], a["content"]) != (b["role"], b["content"]):
            break
        shared += 1
    while shared and chosen[shared - 1]["role"] == "assistant":  # a reply both share is no turn boundary
        shared -= 1
    if shared == 0:
        raise PreferenceDataError(f"{where}: the chosen and rejected dialogues share no prompt (no common first "
                                  "messages before an assistant reply)")
    rest = [dialogue[shared:] for dialogue in (chosen, rejected)]
    for name, messages in zip(("chosen", "rejected"), rest):
        if not messages or messages[0]["role"] != "assistant":
            raise PreferenceDataError(f"{where}: {name} does not go on with an assistant reply after the shared prompt")
    replies = [_transcript(messages, first_bare=True) for messages in rest]
    if replies[0] == replies[1]:
        raise PreferenceDataError(f"{where}: the chosen and rejected replies are identical")
    prompt = tuple({"role": m["role"], "content": m["content"]} for m in chosen[:shared])
    users = [m for m in prompt if m["role"] != "system"]
    instruction = users[0]["content"] if len(users) == 1 else _transcript(list(prompt))
    if not instruction.strip() or not all(r.strip() for r in replies):
        raise PreferenceDataError(f"{where}: the shared prompt or a reply is empty")
    return instruction, replies[0], replies[1], prompt


def _transcript(messages: list[dict[str, str]], first_bare: bool = False) -> str:
    if first_bare and len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
