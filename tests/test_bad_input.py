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
        ("unknown --model", ["--model", "genclf-hff", "--tasks", "genclf_sst2"], "did you mean 'genclf-hf'", []),
        ("a switch that is not true/false", with_args("pretrained=default,trust_remote_code=maybe"),
         "trust_remote_code=maybe: must be true or false", []),
        ("--include_path missing", [*base, "--include_path", str(tmp / "no_tasks")], "no such file or folder", []),
        ("unknown task (lm-eval's message, one line)", [*base[:-1], "genclf_sst9"], "Tasks not found: genclf_sst9", []),
        ("--metadata not JSON (lm-eval's message, one line)", [*base, "--metadata", "{inductive"], "--metadata: Invalid JSON", []),
    ]


EVAL_CASES = 21


def test_the_table_has_every_case(tmp_path: Path) -> None:
    assert len(_eval_cases(tmp_path)) == EVAL_CASES


@pytest.mark.parametrize("case", range(EVAL_CASES))
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
    from genclf_harness.training.recipe_cli import check_output_folder

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


def _write_local(root: Path, name: str, test: bytes, train: bytes | None = None) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"labels": ["negative", "positive"], "input_fields": ["text"]}))
    (folder / "test.jsonl").write_bytes(test)
    if train is not None:
        (folder / "train.jsonl").write_bytes(train)


_GOOD = b'{"text": "fine", "label": "positive"}\n{"text": "bad", "label": 0}\n'
_DATA_CASES = [  # (name, test.jsonl, train.jsonl, what the one line must contain)
    ("non-UTF-8 byte", _GOOD + b'{"text": "caf\xe9", "label": 1}\n', None, "test.jsonl:3: not UTF-8 (byte 0xe9"),
    ("NaN in an input field", b'{"text": "ok", "label": 1}\n{"text": NaN, "label": 0}\n', None,
     "test.jsonl:2: field 'text' is nan"),
    ("infinite label", b'{"text": "ok", "label": Infinity}\n', None, "test.jsonl:1: field 'label' is inf"),
    ("unknown label", b'{"text": "ok", "label": "maybe"}\n', None, "label 'maybe' is not a label"),
    ("empty split", b"\n\n", None, "split 'test' is empty"),
    ("bad row in the training split", _GOOD, _GOOD * 2 + b'{"text": "x", "label": 1\n', "train.jsonl:5: not valid JSON"),
    ("number where text belongs", b'{"text": ["a", "b"], "label": 1}\n', None, "field 'text' is not a string (list)"),
]


@pytest.mark.parametrize("case", range(len(_DATA_CASES)))
def test_a_bad_data_set_fails_before_the_model_loads(case: int, tmp_path: Path, capsys, monkeypatch) -> None:
    """Every row a task will read is checked first (file and line named), and no temporary task
    folder is left behind."""
    import tempfile

    import transformers

    from genclf_harness.cli.eval import main

    name, test, train, message = _DATA_CASES[case]
    _write_local(tmp_path / "data", "mine", test, train)
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded"))
    temp_before = set(Path(tempfile.gettempdir()).glob("genclf-local-tasks-*"))
    assert main(["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_mine"]) == 2, name
    assert message in _error_line(capsys, "genclf-eval"), name
    assert set(Path(tempfile.gettempdir()).glob("genclf-local-tasks-*")) == temp_before


def test_a_data_root_that_is_no_folder_is_named(tmp_path: Path, capsys, monkeypatch) -> None:
    from genclf_harness.cli.eval import main

    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_sst2"]) == 2
    line = _error_line(capsys, "genclf-eval")
    assert "nowhere" in line and "GENCLF_DATA_DIR" in line


@pytest.mark.parametrize(("model_args", "message"), [
    ("max_batch_tokenz=10", "takes no 'max_batch_tokenz', nor does the model loader or its config; did you mean 'max_batch_tokens'?"),
    ("attn_implementaton=eager", "did you mean 'attn_implementation'?"),
    ("rope_theta=10000", "takes no 'rope_theta'"),  # no longer a Llama config key in transformers 5
])
def test_a_model_arg_the_model_does_not_take_is_refused_before_loading(model_args: str, message: str, capsys,
                                                                      monkeypatch, data_dir: Path) -> None:
    import transformers

    from genclf_harness.cli.eval import main

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["--model", "genclf-hf", "--model_args", f"pretrained=default,{model_args}",
                 "--tasks", "genclf_sst2"]) == 2
    assert message in _error_line(capsys, "genclf-eval")


def test_model_args_the_loader_takes_are_accepted(default_model_dir: Path) -> None:
    """The oracle is the loader itself: each key here was passed to from_pretrained on this model."""
    from genclf_harness.cli.model_args import unknown_keys
    from genclf_harness.harness.registry import register

    register()
    values = {"pretrained": str(default_model_dir), "attn_implementation": "eager", "low_cpu_mem_usage": "True",
              "use_cache": "False", "output_hidden_states": "False", "device_map": "cpu", "local_files_only": "True",
              "max_batch_tokens": "512", "dtype": "float32", "foo": "1"}
    for model in ("genclf-hf", "hf"):
        unknown, own = unknown_keys(model, values)
        assert unknown == (["foo"] if model == "genclf-hf" else ["max_batch_tokens", "foo"])
        assert "max_batch_size" in own


def test_resume_without_a_checkpoint_fails_before_any_data_or_model(tmp_path: Path, capsys) -> None:
    from genclf_harness.cli.train import main

    config = Path(__file__).resolve().parents[1] / "configs" / "sft_sst2_cpu.yaml"
    out = tmp_path / "run"
    assert main(["sft", "--config", str(config), "--set", f"train.output_dir={out}", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint-* folder" in err and "without --resume" in err
    assert not out.exists()


def test_ctrl_c_in_training_names_the_checkpoint_and_resume(tmp_path: Path, capsys, monkeypatch) -> None:
    """The recipe is stopped by a KeyboardInterrupt after its config was loaded (as Ctrl-C in
    trainer.train would): the one line names the last checkpoint and --resume."""
    import genclf_harness.cli.errors as errors
    import genclf_harness.training.sft as sft
    from genclf_harness.cli.train import main

    monkeypatch.setattr(errors, "_interrupt_note", None)  # restored after the test

    out = tmp_path / "run"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-12").mkdir()

    def interrupted(config, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sft, "train_classifier", interrupted)
    config = Path(__file__).resolve().parents[1] / "configs" / "sft_sst2_cpu.yaml"
    assert main(["sft", "--config", str(config), "--set", f"train.output_dir={out}"]) == 130
    line = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genclf-train: interrupted")]
    assert line and str(out / "checkpoint-12") in line[0] and "--resume" in line[0]


def test_a_training_model_that_is_not_there_is_a_config_error(tmp_path: Path, capsys) -> None:
    from genclf_harness.cli.train import main

    config = Path(__file__).resolve().parents[1] / "configs" / "sft_sst2_cpu.yaml"
    assert main(["sft", "--config", str(config), "--set", f"model.pretrained={tmp_path / 'nomodel'}",
                 "--set", f"train.output_dir={tmp_path / 'run'}"]) == 2
    assert "model.pretrained" in capsys.readouterr().err and not (tmp_path / "run").exists()
