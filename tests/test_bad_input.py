"""Bad input: one clear line ``<command>: ...``, exit status 2, nothing half-written, no result lost.

Table-driven: each case is a command line, the text its one error line must contain, and the paths
that must not exist afterwards. Every case here fails before any model loads (cheap); the one case
that needs a finished evaluation (a results file that cannot be written) runs the default model on
two documents.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    # lm-eval's log handlers made in an earlier test of this process still hold that test's closed
    # capture stream and report it ("--- Logging error ---"); a real command has one stderr.
    err = re.sub(r"--- Logging error ---.*?\nArguments: [^\n]*\n", "", err, flags=re.S)
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith(f"{command}: ")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def _eval_cases(tmp: Path) -> list[tuple[str, list[str], str, list[Path]]]:
    (tmp / "a_file").write_text("x")
    (tmp / "notes.txt").write_text("not a model")
    (tmp / "empty_model").mkdir()
    base = ["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_sst2"]
    with_args = lambda model_args: ["--model", "genclf-hf", "--model_args", model_args, "--tasks", "genclf_sst2"]  # noqa: E731
    return [
        ("output path is a file", [*base, "--output_path", str(tmp / "a_file")], "is an existing file", []),
        ("output path under a file", [*base, "--output_path", str(tmp / "a_file" / "out")], "is a file", []),
        ("limit 0", [*base, "--limit", "0"], "--limit 0", []),
        ("limit -1", [*base, "--limit", "-1"], "--limit -1", []),
        ("batch size 0", [*base, "--batch_size", "0"], "--batch_size 0: must be 1 or more", []),
        ("batch size word", [*base, "--batch_size", "big"], "--batch_size big", []),
        ("negative shots", [*base, "--num_fewshot", "-2"], "--num_fewshot -2", []),
        ("misspelt metadata key", [*base, "--metadata", '{"inductive_doc": 10}'],
         "did you mean 'inductive_docs'", []),
        ("metadata inductive_docs text", [*base, "--metadata", '{"inductive_docs": "many"}'],
         "inductive_docs 'many'", []),
        ("metadata data_dir missing", [*base, "--metadata", json.dumps({"data_dir": str(tmp / "nowhere")})],
         "no such folder", [tmp / "nowhere"]),
        ("unknown dtype", with_args("pretrained=default,dtype=float13"), "dtype=float13: not a dtype", []),
        ("pretrained is a text file", with_args(f"pretrained={tmp / 'notes.txt'}"), "is a file", []),
        ("pretrained folder without config", with_args(f"pretrained={tmp / 'empty_model'}"), "no config.json", []),
        ("pretrained path missing", with_args(f"pretrained={tmp / 'no_model'}"), "no such folder", []),
        ("hub id offline", with_args("pretrained=someone/not-a-cached-model"), "HF_HUB_OFFLINE=1", []),
        ("another family's data set", [*base[:-1], "genclf_llmbar_zero"], "not a classification data set", []),
    ]


@pytest.mark.parametrize("case", range(16))
def test_genclf_eval_refuses_bad_input_in_one_line(case: int, tmp_path: Path, capsys, monkeypatch) -> None:
    from genclf_harness.cli.eval import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, argv, message, absent = _eval_cases(tmp_path)[case]
    before = set(tmp_path.rglob("*"))
    assert main(argv) == 2, name
    assert message in _error_line(capsys, "genclf-eval"), name
    assert set(tmp_path.rglob("*")) == before  # nothing written
    for path in absent:
        assert not path.exists()


def test_genclf_eval_debug_shows_the_traceback(tmp_path: Path, monkeypatch) -> None:
    from genclf_harness.cli.errors import UsageError
    from genclf_harness.cli.eval import main

    monkeypatch.setenv("GENCLF_DEBUG", "1")
    with pytest.raises(UsageError, match="--limit 0"):
        main(["--model", "genclf-hf", "--tasks", "genclf_sst2", "--limit", "0"])


def test_a_results_file_that_cannot_be_written_is_a_failed_run(tmp_path: Path, capsys, monkeypatch,
                                                               default_model_dir: Path) -> None:
    """lm-eval logs 'Could not save results' and exits 0; here the run fails in one line, and the
    results are kept in a file it names."""
    import genclf_harness.cli.results_file as results_file
    from genclf_harness.cli.eval import main

    def refuse(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(results_file, "write_atomic", refuse)
    status = main(["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_sst2",
                   "--limit", "2", "--output_path", str(tmp_path / "out")])
    assert status == 2
    line = _error_line(capsys, "genclf-eval")
    assert "could not save the results" in line and "No space left on device" in line
    kept = Path(line.split("they are kept in ")[1].split(";")[0].strip())
    assert json.loads(kept.read_text())["results"]["genclf_sst2"]["sample_len"] == 2
    kept.unlink()
    assert not list((tmp_path / "out").rglob("results_*.json"))


def test_atomic_write_leaves_the_old_file_whole_when_the_writer_dies(tmp_path: Path, monkeypatch) -> None:
    from genclf_harness.cli.results_file import write_atomic

    target = tmp_path / "results.json"
    target.write_text('{"old": true}')

    def die(*_args):
        raise KeyboardInterrupt  # killed between writing the temporary file and the rename

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, '{"new": true}' * 1000)
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left
    monkeypatch.undo()
    write_atomic(target, '{"new": true}')
    assert json.loads(target.read_text()) == {"new": True}


def test_genclf_train_refuses_a_finished_run_unless_told(tmp_path: Path, capsys) -> None:
    from genclf_harness.cli.train import main
    from genclf_harness.training.config import check_output_folder

    finished = tmp_path / "run"
    finished.mkdir()
    for name, text in (("genclf_train.json", "{}"), ("log.jsonl", '{"step": 1}\n'), ("train.log", "old\n")):
        (finished / name).write_text(text)
    config = Path(__file__).resolve().parents[1] / "configs" / "sft_sst2_cpu.yaml"
    assert main(["sft", "--config", str(config), "--set", f"train.output_dir={finished}"]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run (genclf_train.json)" in err and "--overwrite" in err
    assert (finished / "log.jsonl").read_text() == '{"step": 1}\n'  # untouched
    # resuming keeps the run's records; overwriting removes them so two runs' logs never mix
    assert check_output_folder(str(finished), resume=True, overwrite=False) is None
    assert (finished / "log.jsonl").exists()
    assert check_output_folder(str(finished), resume=False, overwrite=True) is None
    assert not any((finished / name).exists() for name in ("genclf_train.json", "log.jsonl", "train.log"))
    (tmp_path / "plain").write_text("x")
    assert "is a file" in check_output_folder(str(tmp_path / "plain"), resume=False, overwrite=False)


def test_genclf_report_skips_stray_json_and_leaves_no_empty_folder(tmp_path: Path, capsys) -> None:
    from genclf_harness.report import main

    (tmp_path / "results_stray.json").write_text(json.dumps({"hello": "world"}))
    (tmp_path / "results_broken.json").write_text("{not json")
    with pytest.raises(SystemExit) as raised:
        main([str(tmp_path)])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "skipped" in err and "results_stray.json" in err and "results_broken.json" in err
    assert "no lm-eval results file" in err
    assert not (tmp_path / "report").exists()


def test_other_families_are_never_classification_data_sets(data_dir: Path) -> None:
    from genclf_harness.data import DataError, get_spec, list_local

    assert not {"llmbar", "processbench", "gsm8k"} & set(list_local())
    for name in ("llmbar", "processbench", "gsm8k"):
        with pytest.raises(DataError, match="not a classification data set"):
            get_spec(name)
