"""``genclf-bench scoring`` on the real default model and real data (small limits, float32).

The bench runs stock lm-eval ``hf`` and ``genclf-hf`` on the same requests with one shared model,
so in float32 their log-likelihoods must agree to rounding and their predictions exactly; genclf
must forward about the minimum number of tokens, and stock more where labels are multi-token.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from genclf_harness.cli import bench
from genclf_harness.cli.bench_scoring import JSON_KEYS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows(tmp_path_factory, default_model_dir, data_dir) -> dict[str, dict]:
    output = tmp_path_factory.mktemp("bench") / "scoring.json"
    code = bench.main([
        "scoring", "--tasks", "genclf_sst2,genclf_sst5", "--num_fewshot", "0", "--limit", "5",
        "--dtype", "float32", "--batch_size", "8", "--device", "cpu", "--json", "--output", str(output),
        # Two instead of ~100 calibration contexts the first document carries, to keep the test short.
        "--metadata", '{"inductive_docs": 2}',
    ])
    assert code == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    return {row["task"]: row for row in lines}


def test_stock_and_genclf_agree_exactly(rows):
    assert set(rows) == {"genclf_sst2", "genclf_sst5"}
    for row in rows.values():
        assert set(JSON_KEYS) <= set(row)
        assert row["docs"] == 5 and row["num_fewshot"] == 0
        assert row["max_abs_dll"] < 1e-4
        assert row["agreement"] == 1.0
        assert row["agreement_norm"] == 1.0


def test_genclf_forwards_about_the_minimum(rows):
    for row in rows.values():
        assert 0 < row["genclf_tokens_over_min"] <= 1.1
        assert row["stock_tokens"] > 0 and row["min_tokens"] > 0
        assert row["bound_s"] > 0 and row["stock_over_bound"] > 0 and row["genclf_over_bound"] > 0
        assert row["peak_mem_mb"] > 100  # the process holds the 135M model in float32
    sst5 = rows["genclf_sst5"]
    # Multi-token labels: stock feeds the context again for every label.
    assert sst5["stock_tokens_over_min"] > 1.3 * sst5["genclf_tokens_over_min"]
    assert sst5["stock_tokens"] > sst5["genclf_tokens"]


def test_help_names_the_json_keys(capsys):
    with pytest.raises(SystemExit):
        bench.main(["scoring", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for key in JSON_KEYS:
        assert key in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "genclf_sst9"], "unknown task 'genclf_sst9'; did you mean"),
        (["--tasks", "genclf_agnews_gen"], "not a classification task"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--num_fewshot", "zero"], "is not an integer"),
        (["--metadata", "{inductive"], "--metadata is not valid JSON"),
    ],
)
def test_bad_input_gets_a_clear_error(argv, message, data_dir, capsys):
    assert bench.main(["scoring", "--device", "cpu", *argv]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genclf-bench: scoring: ")]
    assert len(lines) == 1 and message in lines[0]


def test_random_init_gpu_check_path_runs_on_cpu(tmp_path, default_model_dir, data_dir):
    spec = importlib.util.spec_from_file_location("gpu_scoring_check", REPO / "scripts" / "gpu_scoring_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "gpu.json"
    code = module.main([
        "--sizes", "tiny", "--tasks", "genclf_sst2", "--limit", "3", "--num_fewshot", "0",
        "--batch_size", "4", "--dtype", "float32", "--device", "cpu", "--output", str(output),
    ])
    assert code == 0
    [row] = [json.loads(line) for line in output.read_text().splitlines()]
    assert row["model"].startswith("random-init llama tiny")
    assert row["docs"] == 3
    assert row["max_abs_dll"] < 1e-4 and row["agreement"] == 1.0
