"""Tables as prompts, UniPredict's way: a row serialised as text, the label block, distribution answers.

Source: Wang, Wang & Sun (2023), "UniPredict: Large Language Models are Universal Tabular
Classifiers" (arXiv 2310.03266), and its camera-ready code (github.com/rwang37/UniPredict,
``evaluate/utils.py``: ``PROMPT_DICT``, ``data_to_prompt``, ``label_to_prompt``, ``serialize_output``).

- A row: ``"{column} is {value}; "`` per feature, underscores in column names read as spaces, the
  last ``"; "`` replaced by ``"."``: ``"mean radius is 17.99; texture is 10.38."`` (`serialize_row`).
  Numbers are rounded to ``decimals`` places (numpy's rounding) and printed as Python prints them,
  as pandas' ``tolist()`` hands them to UniPredict's f-string: an integer column prints ``5``, a
  float column ``5.0``. The code rounds features to 4 places (``samples.round(4)``); we default to
  2 (``meta.json`` ``decimals`` changes it).
- The label block: ``class 0: xxx; class 1: xxx; where class 0 stands for "benign"; class 1 stands
  for "malignant".`` (`label_block`).
- The prompt (`unipredict_prompt`, byte for byte their ``"Default"`` form; ``"light"`` drops the
  data set description)::

      Below is the description of a dataset, an object profile from the dataset and a target description. Predict the target by the given information of the object.
      # Dataset description: <description>
      # Object description: <row>
      <blank line>
      # You should return the probability of each class by: <space>
      <label block>
      <blank line>
      # Answer: <space>

  (the blank lines are their code's: the row and the label block each end with a newline before
  the template adds its own). The code puts the row before the label block.
- The answer: the class probabilities, rounded to 2 places, ``class 0: 0.83; class 1: 0.17.``
  (`distribution_answer`; the paper's target augmentation, a teacher's probabilities) or one-hot,
  ``class 0: 1.0; class 1: 0.0.`` (`onehot_answer`: their ablation without augmentation). Both
  say ``class k``, not the label's name: the label block names them.

A tabular data set (`genclf_harness.data.tabular`) is a genclf classification data set whose one
input field ``row`` holds the serialised row; `genclf_instruction` and `genclf_template` make its
prompt UniPredict's, within genclf's frame (instruction, blank line, input ending with the answer
cue, ``" " + label``). Two differences remain: a blank line between the description and
``# Object description``, and the answer follows ``"# Answer:"`` after one space (a label word, or
with ``data.targets`` onehot/augmented in ``genclf-train sft``, a distribution answer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from genclf_harness.data.specs import DataError

PromptForm = Literal["full", "light"]
PROMPT_FORMS: tuple[PromptForm, ...] = ("full", "light")
DEFAULT_DECIMALS = 2
"""Decimal places of numbers in a serialised row (UniPredict's code: 4; see the module doc)."""
ANSWER_DECIMALS = 2
"""Decimal places of the probabilities in a distribution answer (UniPredict's ``np.round(k, 2)``)."""

FULL_PREAMBLE = ("Below is the description of a dataset, an object profile from the dataset and a target "
                 "description. Predict the target by the given information of the object.")
LIGHT_PREAMBLE = "Below is a dataset. Predict the target by the given information of the object."
TASK_LINE = "# You should return the probability of each class by: "
ANSWER_CUE = "# Answer:"
_NUMBER = re.compile(r"class\s+(\d+)\s*:\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)")


def format_value(value: Any, decimals: int | None = DEFAULT_DECIMALS) -> str:
    """A cell as UniPredict's f-string prints it: ints as they are, floats rounded (``np.round``) and
    printed by Python's ``repr`` (``17.99``, ``5.0``, ``1e-05``), text as it is, booleans ``True``."""
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value) if decimals is None else float(np.round(float(value), decimals))
        return repr(number)
    raise TypeError(f"a table cell is a number or a string, not {type(value).__name__}: {value!r}")


def column_phrase(column: str) -> str:
    """UniPredict's column name in a row: underscores read as spaces (``mean_radius`` -> ``mean radius``)."""
    return column.replace("_", " ")


def serialize_row(columns: Sequence[str], values: Sequence[Any], *, decimals: int | None = DEFAULT_DECIMALS) -> str:
    """``"a is 1.0; b is x."``: ``"{column} is {value}; "`` per feature, the last ``"; "`` made ``"."``."""
    if len(columns) != len(values):
        raise ValueError(f"{len(columns)} columns but {len(values)} values")
    if not columns:
        raise ValueError("a serialised row needs at least one feature")
    text = "".join(f"{column_phrase(c)} is {format_value(v, decimals)}; " for c, v in zip(columns, values, strict=True))
    return text[:-2] + "."


def label_block(labels: Sequence[str]) -> str:
    """``class 0: xxx; class 1: xxx; where class 0 stands for "a"; class 1 stands for "b".``"""
    if not labels:
        raise ValueError("a label block needs at least one label")
    slots = "".join(f"class {k}: xxx; " for k in range(len(labels)))
    meanings = "".join(f'class {k} stands for "{label}"; ' for k, label in enumerate(labels))
    return slots + "where " + meanings[:-2] + "."


def dataset_annotations(description: str | None, target: str,
                        feature_descriptions: Mapping[str, str] | None = None) -> str:
    """The ``# Dataset description`` text: the description (default ``"The target of the dataset is
    <target>."``, how UniPredict's rewritten metadata begins), then ``Features and their
    explanations:`` with ``"    <feature>: <explanation>"`` lines, the layout of their metadata."""
    text = description.strip() if description and description.strip() else f"The target of the dataset is {target}."
    if feature_descriptions:
        lines = "\n".join(f"    {column_phrase(name)}: {explanation}" for name, explanation in feature_descriptions.items())
        text += "\nFeatures and their explanations:\n" + lines
    return text


def unipredict_prompt(row: str, labels: Sequence[str], annotations: str | None = None,
                      form: PromptForm = "full") -> str:
    """UniPredict's prompt for one serialised ``row`` (`serialize_row`), byte for byte their
    ``PROMPT_DICT["Default"]`` (``form="full"``, which needs ``annotations``) or ``["light"]``."""
    body = (f"# Object description: {row}\n\n"
            f"{TASK_LINE}\n{label_block(labels)}\n\n"
            f"{ANSWER_CUE} \n")
    if form == "light":
        return f"{LIGHT_PREAMBLE}\n{body}"
    if form != "full":
        raise ValueError(f"unknown prompt form {form!r}; known: {', '.join(PROMPT_FORMS)}")
    if annotations is None:
        raise ValueError("the full UniPredict prompt states the data set description: give annotations")
    return f"{FULL_PREAMBLE}\n# Dataset description: {annotations}\n{body}"


def genclf_instruction(form: PromptForm, annotations: str) -> str:
    """The instruction of a tabular data set's spec (braces escaped: it is a format string)."""
    if form == "light":
        return LIGHT_PREAMBLE
    return _escape(f"{FULL_PREAMBLE}\n# Dataset description: {annotations}")


def genclf_template(labels: Sequence[str], row_field: str = "row") -> str:
    """The spec's template: the row, the label block and the answer cue (UniPredict's lines)."""
    return (f"# Object description: {{{row_field}}}\n\n{_escape(TASK_LINE)}\n"
            f"{_escape(label_block(labels))}\n\n{ANSWER_CUE}")


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# -- distribution answers -------------------------------------------------------------------------


def distribution_answer(probabilities: Sequence[float]) -> str:
    """``class 0: 0.83; class 1: 0.17.``: UniPredict's ``serialize_output`` of one row of
    ``predict_proba`` (each probability ``np.round(p, 2)``; the rounded values need not sum to 1)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 1 or probs.size == 0 or not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError(f"a distribution answer needs finite non-negative probabilities, not {probabilities!r}")
    return "; ".join(f"class {k}: {float(np.round(p, ANSWER_DECIMALS))!r}" for k, p in enumerate(probs)) + "."


def onehot_answer(label: int, num_classes: int) -> str:
    """``class 0: 0.0; class 1: 1.0.``: the one-hot answer of UniPredict's ablation."""
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} is not below {num_classes}")
    return distribution_answer(np.eye(num_classes)[label])


DistributionStatus = Literal["parsed", "missing_class", "repeated_class", "unknown_class", "zero_mass", "empty"]


@dataclass(frozen=True)
class ParsedDistribution:
    """A generated distribution answer read back: ``probabilities`` (normalised, K) or None."""

    probabilities: tuple[float, ...] | None
    status: DistributionStatus

    @property
    def index(self) -> int | None:
        """The numeric argmax (ties: the lowest class), or None when unparseable."""
        if self.probabilities is None:
            return None
        return int(np.argmax(self.probabilities))


def parse_distribution(text: str, num_classes: int) -> ParsedDistribution:
    """Read ``class k: p`` pairs: every class 0..K-1 exactly once, no other class, a positive
    total; the probabilities are divided by their total (rounded answers rarely sum to 1).
    Anything else is unparseable (None), with the reason as ``status``; never guessed."""
    pairs = [(int(k), float(p)) for k, p in _NUMBER.findall(text)]
    if not pairs:
        return ParsedDistribution(None, "empty")
    found: dict[int, float] = {}
    for k, p in pairs:
        if k >= num_classes:
            return ParsedDistribution(None, "unknown_class")
        if k in found:
            return ParsedDistribution(None, "repeated_class")
        found[k] = p
    if len(found) < num_classes:
        return ParsedDistribution(None, "missing_class")
    values = np.array([found[k] for k in range(num_classes)], dtype=np.float64)
    total = float(values.sum())
    if not math.isfinite(total) or total <= 0:
        return ParsedDistribution(None, "zero_mass")
    return ParsedDistribution(tuple(float(v) for v in values / total), "parsed")


# -- the context check ---------------------------------------------------------------------------


def check_context_length(dataset: str, tokenizer: Any, max_length: int, *, splits: Sequence[str] | None = None,
                         data_dir: str | None = None) -> int:
    """The token count of the longest zero-shot prompt (instruction, row, label block, cue and the
    longest label word) of a tabular data set's ``splits`` (default: all); a DataError naming the
    file, line and id of the longest row and its length when it exceeds ``max_length``, so a table
    too wide for the model fails before any model work (lm-eval would cut the prompt's head)."""
    from genclf_harness.data import get_spec, load_split
    from genclf_harness.data.tabular import read_split
    from genclf_harness.prompts.classification import ClassificationPrompt

    spec = get_spec(dataset, data_dir)
    longest = (-1, "", "")
    for split in splits or spec.splits:
        table = read_split(dataset, split, data_dir)
        for row, line in zip(load_split(dataset, split, data_dir), table.lines, strict=True):
            prompt = ClassificationPrompt.render(spec, row)
            answer = max(prompt.choices, key=len)
            tokens = len(tokenizer(f"{prompt.instruction}\n\n{prompt.query} {answer}")["input_ids"])
            if tokens > longest[0]:
                longest = (tokens, f"{table.path}:{line}", row["id"])
    tokens, where, row_id = longest
    if tokens > max_length:
        raise DataError(f"{where}: row {row_id!r} makes a prompt of {tokens} tokens, longer than the model's context of "
                        f"{max_length} (the longest row of {dataset!r}); use fewer features, fewer decimals, "
                        "\"prompt\": \"light\" in its meta.json, or a model with a longer context.")
    return tokens
