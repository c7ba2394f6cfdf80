"""Write scikit-learn's bundled real tables as tabular data folders (offline, no download).

    python scripts/sklearn_tables.py --out DIR breast_cancer wine iris diabetes digits

Each table becomes ``DIR/<name>/`` with ``train.csv`` and ``test.csv`` (a seeded stratified 80/20
split; a numeric target, such as diabetes', is split without stratification and binned at the
training quartiles when loaded) and a ``meta.json`` (``"kind": "tabular"``, the target column, the
first lines of sklearn's ``DESCR`` as the description, the feature explanations its "Attribute
Information" gives). Then ``GENCLF_DATA_DIR=DIR genclf-eval --tasks genclf_breast_cancer ...``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DECIMALS = {"diabetes": 4}
"""Tables whose features need more than the default 2 decimals (diabetes' are scaled to about 0.05)."""
TABLES: dict[str, tuple[str, str]] = {
    "breast_cancer": ("load_breast_cancer", "diagnosis"),
    "wine": ("load_wine", "cultivar"),
    "iris": ("load_iris", "species"),
    "diabetes": ("load_diabetes", "disease progression"),
    "digits": ("load_digits", "digit"),
}
"""Table name -> (the sklearn.datasets loader, the target column's name)."""


def describe(descr: str) -> str:
    """The title line of a ``DESCR``, and its first prose paragraph when one follows the title."""
    lines = [line.rstrip() for line in descr.splitlines()]
    body = [line for line in lines if not line.startswith("..")]
    while body and not body[0].strip():
        body.pop(0)
    title = body[0].strip() if body else ""
    rest = body[2:] if len(body) > 1 and set(body[1].strip()) <= {"-", "="} else body[1:]
    while rest and not rest[0].strip():
        rest.pop(0)
    paragraph = []
    for line in rest:
        if not line.strip():
            break
        paragraph.append(line.strip())
    prose = " ".join(paragraph)
    if prose and not prose.startswith(("**", ":", "..")):
        return f"{title}. {prose}"
    return f"{title}."


def feature_explanations(descr: str, features: Sequence[str]) -> dict[str, str]:
    """Explanations from the ``:Attribute Information:`` bullets: ``- name (explanation)`` or
    ``- name    explanation``, matched to the features whose name holds the bullet's name."""
    section = descr.split(":Attribute Information:", 1)
    if len(section) < 2:
        return {}
    explained: list[tuple[str, str]] = []
    for line in section[1].splitlines()[1:]:
        if line.startswith(":"):
            break
        match = re.match(r"^\s*-\s+(.+?)\s*(?:\((.+)\)|\s{2,}(.+))\s*$", line)
        if match and match.group(1).lower() != "class":
            explained.append((match.group(1).lower(), (match.group(2) or match.group(3)).strip()))
    found = {}
    for feature in features:
        words = feature.lower()
        for key, text in sorted(explained, key=lambda item: -len(item[0])):
            if words == key or re.search(rf"\b{re.escape(key)}\b", words):
                found[feature] = text
                break
    return found


def write_table(name: str, out: Path, *, seed: int = 1234, test_size: float = 0.2) -> Path:
    """Write one table's folder; returns it."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loader, target = TABLES[name]
    bunch = getattr(datasets, loader)()
    features = [str(f) for f in bunch.feature_names]
    if target in features:
        raise ValueError(f"{name}: the target name {target!r} is also a feature")
    names = getattr(bunch, "target_names", None)
    categorical = names is not None
    y: Any = np.asarray(bunch.target)
    labels = [str(names[k]) for k in y] if categorical else [float(v) for v in y]
    indices = np.arange(len(y))
    train, test = train_test_split(indices, test_size=test_size, random_state=seed,
                                   stratify=y if categorical else None)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        with open(folder / f"{split}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([*features, target])
            for i in rows:  # in the seeded split's order: the first rows are a random sample
                writer.writerow([*(_cell(v) for v in bunch.data[i]), _cell(labels[i])])
    meta: dict[str, Any] = {
        "kind": "tabular",
        "target": target,
        "description": describe(bunch.DESCR),
        "source": f"sklearn.datasets.{loader} (scikit-learn's bundled copy), split 80/20 with seed {seed}"
                  + (", stratified" if categorical else ""),
        "splits": {"train": len(train), "test": len(test)},
    }
    explanations = feature_explanations(bunch.DESCR, features)
    if explanations:
        meta["feature_descriptions"] = explanations
    if categorical:
        meta["labels"] = [str(n) for n in names]
    if name in DECIMALS:
        meta["decimals"] = DECIMALS[name]
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return folder


def _cell(value: Any) -> str:
    number = float(value) if not isinstance(value, str) else None
    if number is None:
        return value
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the data root to write the folders into")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the train/test split")
    parser.add_argument("tables", nargs="+", choices=sorted(TABLES), help="tables to write")
    args = parser.parse_args(argv)
    for name in args.tables:
        folder = write_table(name, Path(args.out), seed=args.seed)
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
