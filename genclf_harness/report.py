"""``genclf-report RESULTS_DIR``: a Markdown report with PNG figures from genclf-eval results.

For each genclf classification task in the results files found under RESULTS_DIR: a table of the
raw and calibrated metrics (accuracy, macro-F1, ECE, majority share) as lm-eval reported them, each
with its bootstrap stderr; each calibrated accuracy and macro-F1 minus raw with a paired bootstrap
interval (from the manifest's ``paired_vs_raw``); and,
where the run logged its samples (``--log_samples``), a reliability diagram (raw vs the calibrated
probabilities) and confusion matrices (raw vs prior matching), drawn from the per-document label
probabilities that genclf-eval writes into each sample's ``genclf`` field.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_METRICS = ("acc", "macro_f1", "ece_width15", "majority_share")
_EARLIER = {"macro_f1": "f1_macro", "ece_width15": "ece"}
"""The names results files written before the rename use (``genclf_harness.harness.metrics.RENAMED_METRICS``)."""
_METHODS = ("raw", "auto", "prior_train", "prior_train_ind", "prior", "prior_ind", "prior_em", "prior_em_ind", "bc",
            "bc_ind", "bcts_em", "bbse", "cc", "dcpmi", "pmi")
_PAIRED_METRICS = ("acc", "macro_f1")
_BINS = 15


class ReportError(ValueError):
    """The results folder holds nothing to report."""


def find_results(root: Path) -> list[Path]:
    return sorted(root.rglob("results_*.json"))


def load_samples(results_file: Path, task: str) -> list[dict[str, Any]]:
    """The logged samples of ``task`` written beside ``results_file`` by the same run."""
    stamp = results_file.stem.removeprefix("results_")
    path = results_file.parent / f"samples_{task}_{stamp}.jsonl"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def metric_table(task_results: dict[str, Any]) -> list[list[str]]:
    """A row per method the run reported: each metric as ``value ± bootstrap stderr``."""
    rows = []
    for method in _METHODS:
        cells = []
        for metric in _METRICS:
            value, stderr = _value(task_results, metric, method)
            cell = f"{value:.3f}" if isinstance(value, (int, float)) else ""
            if cell and isinstance(stderr, (int, float)):
                cell += f" ± {stderr:.3f}"
            cells.append(cell)
        if any(cells):
            rows.append([method, *cells])
    return rows


def _value(task_results: dict[str, Any], metric: str, method: str) -> tuple[Any, Any]:
    """A metric's value and stderr under today's name, or under its earlier one (older files)."""
    for base in (metric, _EARLIER.get(metric, metric)):
        name = base if method == "raw" else f"{base}_{method}"
        if f"{name},none" in task_results:
            return task_results[f"{name},none"], task_results.get(f"{name}_stderr,none")
    return None, None


def paired_table(paired: dict[str, Any]) -> list[list[str]]:
    """A row per calibration method: its accuracy and macro-F1 minus raw, with the paired bootstrap
    interval (the same resamples for both, so far tighter than two separate error bars)."""
    rows = []
    for method in _METHODS[1:]:
        cells = []
        for metric in _PAIRED_METRICS:
            entry = paired.get(f"{metric}_{method}", paired.get(f"{_EARLIER.get(metric, metric)}_{method}"))
            cells.append(f"{entry['delta']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}]"
                         if isinstance(entry, dict) else "")
        if any(cells):
            rows.append([method, *cells])
    return rows


def _reliability(probs: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(float)
    bins = np.minimum((confidence * _BINS).astype(int), _BINS - 1)
    counts = np.bincount(bins, minlength=_BINS)
    acc = np.bincount(bins, weights=correct, minlength=_BINS) / np.maximum(counts, 1)
    conf = np.bincount(bins, weights=confidence, minlength=_BINS) / np.maximum(counts, 1)
    return counts, acc, conf


def draw_figures(task: str, samples: list[dict[str, Any]], labels: Sequence[str], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gold = np.array([s["genclf"]["gold"] for s in samples])
    probs = {m: np.array([s["genclf"]["probs"][m] for s in samples]) for m in samples[0]["genclf"]["probs"]}
    written = []

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for method in ("raw", "prior", "bc"):
        if method in probs:
            counts, acc, conf = _reliability(probs[method], gold)
            seen = counts > 0
            ax.plot(conf[seen], acc[seen], marker="o", label=method)
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"{task}: reliability")
    ax.legend(loc="upper left")
    name = f"{task}_reliability.png"
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    written.append(name)

    shown = [m for m in ("raw", "prior") if m in probs]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4))
    for ax, method in zip(np.atleast_1d(axes), shown, strict=True):
        k = probs[method].shape[1]
        matrix = np.zeros((k, k), dtype=int)
        np.add.at(matrix, (gold, probs[method].argmax(axis=1)), 1)
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            dark = value > matrix.max() / 2
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ticks = list(labels) if len(labels) == k else [str(i) for i in range(k)]
        ax.set_xticks(range(k), ticks, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), ticks, fontsize=7)
        ax.set(xlabel="predicted", ylabel="gold", title=method)
    name = f"{task}_confusion.png"
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    written.append(name)
    return written


def _read_results(path: Path) -> dict[str, Any] | None:
    """An lm-eval results file's content; ``None`` (with a warning naming it) for anything else."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        print(f"genclf-report: skipped {path}: not readable JSON ({type(err).__name__})", file=sys.stderr)
        return None
    if not isinstance(results, dict) or not isinstance(results.get("results"), dict):
        print(f"genclf-report: skipped {path}: not an lm-eval results file (no 'results' table)", file=sys.stderr)
        return None
    return results


def write_report(results_dir: Path, out_dir: Path | None = None) -> Path:
    results_dir = Path(results_dir)
    loaded = []
    for results_file in find_results(results_dir):
        results = _read_results(results_file)
        if results is not None:
            loaded.append((results_file, results))
    if not loaded:
        raise ReportError(f"no lm-eval results file (results_*.json with a 'results' table) under {results_dir}; "
                          "run genclf-eval with --output_path first")
    out_dir = Path(out_dir or results_dir / "report")
    out_dir.mkdir(parents=True, exist_ok=True)  # only once there is something to write
    lines = ["# genclf-harness report", ""]
    for results_file, results in loaded:
        manifest = results.get("genclf_manifest", {})
        model = manifest.get("model", {}).get("name_or_path") or results.get("config", {}).get("model_args")
        lines += [f"## {results_file.relative_to(results_dir)}", "", f"Model: `{model}`", ""]
        for task, task_results in sorted(results.get("results", {}).items()):
            rows = metric_table(task_results)
            if not rows:
                continue
            docs = task_results.get("sample_len", "?")
            lines += [f"### {task} ({docs} documents)", "",
                      "| method | " + " | ".join(_METRICS) + " |", "|---" * (len(_METRICS) + 1) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
            paired = paired_table(manifest.get("tasks", {}).get(task, {}).get("paired_vs_raw", {}))
            if paired:
                level = next(iter(manifest["tasks"][task]["paired_vs_raw"].values())).get("level", 0.95)
                lines += [f"Calibrated minus raw, with the paired bootstrap {level:.0%} interval:", "",
                          "| method | " + " | ".join(f"{m} − raw" for m in _PAIRED_METRICS) + " |",
                          "|---" * (len(_PAIRED_METRICS) + 1) + "|"]
                lines += ["| " + " | ".join(row) + " |" for row in paired]
                lines.append("")
            samples = [s for s in load_samples(results_file, task) if "genclf" in s]
            if samples:
                labels = manifest.get("tasks", {}).get(task, {}).get("labels", [])
                safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{results_file.stem}_{task}")
                for figure in draw_figures(safe, samples, labels, out_dir):
                    lines.append(f"![{figure}]({figure})")
                lines.append("")
            else:
                lines += ["(no logged samples: run with --log_samples for figures)", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genclf-report", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="the --output_path of genclf-eval runs")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default RESULTS_DIR/report)")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.results_dir, args.out)
    except ReportError as err:
        parser.exit(2, f"genclf-report: {err}\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
