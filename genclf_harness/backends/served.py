"""Label scoring and generation against a served model (``vllm serve``'s OpenAI-compatible API).

:class:`ServedBackend` implements ``Scorer`` and ``Generator`` over HTTP, with the request plans
of :class:`~genclf_harness.backends.vllm_backend.VLLMBackend` (it is that class with a different
transport), so the served scores are the in-process ones:

- the prompts are sent as **token ids** (the context/continuation split is lm-eval's, by
  :mod:`.label_encoding`, on a local copy of the model's tokenizer), so the server tokenises
  nothing;
- **label tokens** are read with vLLM's ``logprob_token_ids`` (one request per context for
  single-token labels; a multi-token label's later tokens from requests ``context + label
  prefix``, which read the context back from the server's prefix cache), ``is_greedy`` from the
  greedy token the server returns;
- where a server has no ``logprob_token_ids`` (other servers, older vLLM), every label token comes
  from ``echo`` + ``logprobs`` (the OpenAI completions API's prompt log-probs, what lm-eval's
  ``local-completions`` uses): exact too, one request per label;
- the sequence seen is the last ``max_model_len - 1`` tokens of ``context + continuation``
  (left truncation, as lm-eval's ``vllm``); ``max_model_len`` is read from ``/v1/models``.

Requests with the same settings are sent several prompts to one HTTP call
(``prompts_per_request``) and ``num_concurrent`` calls at once; each call has a bounded
``timeout`` and is retried ``max_retries`` times (connection errors, timeouts, 5xx; not 4xx) with
a doubling pause. A server that does not answer, a model it does not serve, or a response without
log-probs raises :class:`ServedModelError` naming the URL and what to change.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from genclf_harness.backends.generation import SamplingSettings
from genclf_harness.backends.label_encoding import LabelEncoder
from genclf_harness.backends.protocol import ScoringStats
from genclf_harness.backends.vllm_backend import MULTI_TOKEN_PATHS, VLLMBackend, _Request

logger = logging.getLogger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"


class ServedModelError(RuntimeError):
    """The server could not be reached, does not serve the model, or gave no usable answer."""


def api_root(base_url: str) -> str:
    """``http://host:port/v1`` from any of ``http://host:port``, ``.../v1``, ``.../v1/completions``."""
    url = str(base_url).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ServedModelError(f"base_url {base_url!r} must start with http:// or https://")
    for tail in ("/completions", "/chat/completions"):
        if url.endswith(tail):
            url = url[: -len(tail)]
            break
    return url if url.endswith("/v1") else url + "/v1"


@dataclass(slots=True)
class ClientStats:
    """What the client sent (tests read it to see batching and concurrency)."""

    http_calls: int = 0
    prompts: int = 0
    retries: int = 0
    max_in_flight: int = 0
    seconds: float = 0.0


class ServedClient:
    """A small, thread-safe client of an OpenAI-compatible ``/v1`` API: bounded timeouts, retries,
    several calls in flight."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        retry_wait: float = 0.5,
        num_concurrent: int = 4,
    ) -> None:
        if timeout <= 0:
            raise ServedModelError(f"timeout must be > 0 seconds, not {timeout}")
        if max_retries < 0 or num_concurrent < 1:
            raise ServedModelError(f"max_retries must be >= 0 and num_concurrent >= 1, not {max_retries}, {num_concurrent}")
        self.root = api_root(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.retry_wait = float(retry_wait)
        self.num_concurrent = int(num_concurrent)
        self.stats = ClientStats()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._in_flight = 0

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_local", "_lock")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._in_flight = 0

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            if self.api_key:
                session.headers["Authorization"] = f"Bearer {self.api_key}"
            self._local.session = session
        return session

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """One call, retried on connection errors, timeouts and 5xx answers."""
        import requests

        url = f"{self.root}/{path.lstrip('/')}"
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.stats.retries += 1
                time.sleep(self.retry_wait * 2 ** (attempt - 1))
            with self._lock:
                self._in_flight += 1
                self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
                self.stats.http_calls += 1
            started = time.perf_counter()
            try:
                response = self._session().request(method, url, json=payload, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as err:
                last = f"{type(err).__name__}: {err}"
                continue
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self.stats.seconds += time.perf_counter() - started
            if response.status_code >= 500:
                last = f"HTTP {response.status_code}: {_message(response)}"
                continue
            if response.status_code >= 400:
                raise ServedModelError(f"{url} refused the request (HTTP {response.status_code}): {_message(response)}")
            try:
                return response.json()
            except ValueError as err:
                raise ServedModelError(f"{url} answered with something that is not JSON: {response.text[:200]!r}") from err
        raise ServedModelError(
            f"{url} did not answer after {self.max_retries + 1} tries ({last}); is the server up at {self.root}? "
            "(e.g. vllm serve <model> --port <port>)"
        )

    def served_models(self) -> list[dict[str, Any]]:
        data = self.request("GET", "models").get("data")
        if not isinstance(data, list):
            raise ServedModelError(f"{self.root}/models gave no model list; is this an OpenAI-compatible server?")
        return data

    def map(self, function: Any, items: Sequence[Any]) -> list[Any]:
        """``function`` over ``items`` with up to ``num_concurrent`` calls in flight, in order."""
        if self.num_concurrent == 1 or len(items) <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.num_concurrent, len(items))) as pool:
            return list(pool.map(function, items))


def _message(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]


# -- the shapes VLLMBackend reads (vLLM's RequestOutput, CompletionOutput, Logprob) -----------------


@dataclass(frozen=True, slots=True)
class _Logprob:
    logprob: float
    rank: int | None = None


@dataclass(slots=True)
class _Completion:
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, _Logprob]] | None = None


@dataclass(slots=True)
class _Output:
    outputs: list[_Completion]
    prompt_logprobs: list[dict[int, _Logprob] | None] | None = None
    num_cached_tokens: int = 0


def _token_id(key: str) -> int:
    # return_tokens_as_token_ids: tokens come back as "token_id:123"
    if not key.startswith("token_id:"):
        raise ServedModelError(f"the server returned token {key!r}, not 'token_id:<id>': it ignores "
                               "return_tokens_as_token_ids; score with label_token_ids=false")
    return int(key.split(":", 1)[1])


class ServedBackend(VLLMBackend):
    """A served model as a ``Scorer`` and ``Generator`` (see the module docstring).

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` and ``/completions``
            may be left off or included).
        model: the served model name (``None``: the only one served).
        tokenizer: a transformers tokenizer or a folder / hub id to load one from (``None``: the
            served model's ``root`` path, then its name); it must be the server's tokenizer.
        api_key: sent as a bearer token (default: ``$OPENAI_API_KEY``).
        timeout, max_retries, num_concurrent, prompts_per_request: the transport (see above).
        max_length: the model's context (``None``: ``max_model_len`` from ``/v1/models``).
        label_token_ids: read labels with ``logprob_token_ids`` (``None``: if the server honours it).
        multi_token, add_special_tokens, prefix_token_id, align_labels: as ``VLLMBackend``.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        tokenizer: Any = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        num_concurrent: int = 4,
        prompts_per_request: int = 32,
        max_length: int | None = None,
        label_token_ids: bool | None = None,
        multi_token: str = "prefix",
        add_special_tokens: bool | None = None,
        prefix_token_id: int | None = None,
        align_labels: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        if multi_token not in MULTI_TOKEN_PATHS:
            raise ValueError(f"multi_token must be one of {', '.join(MULTI_TOKEN_PATHS)}, got {multi_token!r}")
        if prompts_per_request < 1:
            raise ValueError(f"prompts_per_request must be at least 1, not {prompts_per_request}")
        self.client = ServedClient(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                   num_concurrent=num_concurrent)
        self.prompts_per_request = int(prompts_per_request)
        entry = self._served_entry(model)
        self.model_name = str(entry["id"])
        self.model_root = entry.get("root")
        served_length = entry.get("max_model_len")
        if max_length is None and served_length is None:
            raise ServedModelError(f"{self.client.root}/models does not give max_model_len for {self.model_name!r}: "
                                   "pass max_length")
        self.max_length = int(max_length if max_length is not None else served_length)
        self.tokenizer = _load_tokenizer(tokenizer, self.model_root, self.model_name, trust_remote_code)
        self.encoder = LabelEncoder(self.tokenizer, add_special_tokens=add_special_tokens,
                                    prefix_token_id=prefix_token_id, align_labels=align_labels)
        self.multi_token = multi_token
        self.llm = None
        self.lora_request = None
        self._skip_cache_field = False  # the server decides; prompt log-prob requests are computed whole
        self.reuse_prefix_cache = False
        self._block_size = 0
        self._prompt_logprobs_ok = True
        self.last_stats = ScoringStats()
        bos = self.tokenizer.bos_token
        self._bos_text = bos if isinstance(bos, str) and bos else None
        self.label_token_ids = self._probe_logprobs(label_token_ids)

    # -- set-up -------------------------------------------------------------------------------

    def _served_entry(self, model: str | None) -> dict[str, Any]:
        served = self.client.served_models()
        names = [str(m.get("id")) for m in served]
        if model is None:
            if len(served) != 1:
                raise ServedModelError(f"{self.client.root} serves {names}: name one with model=")
            return served[0]
        for entry in served:
            if str(entry.get("id")) == model:
                return entry
        raise ServedModelError(f"{self.client.root} does not serve model {model!r}; it serves {names}")

    def _probe_logprobs(self, wanted: bool | None) -> bool:
        """Whether the server returns log-probs at all, and honours ``logprob_token_ids``."""
        probe = self.encoder.prefix_token_id
        payload = {"model": self.model_name, "prompt": [probe], "max_tokens": 1, "temperature": 0.0, "logprobs": 1,
                   "return_tokens_as_token_ids": True}
        if wanted is not False:
            payload["logprob_token_ids"] = [probe]
        choice = self._choices(self.client.request("POST", "completions", payload), 1)[0]
        table = (choice.get("logprobs") or {}).get("top_logprobs") or [None]
        if not table[0]:
            raise ServedModelError(
                f"{self.client.root} returned no log-probs for model {self.model_name!r}: label scoring needs a server "
                "that gives completion log-probs (vllm serve gives them; check --max-logprobs)"
            )
        honoured = f"token_id:{probe}" in table[0]
        if wanted and not honoured:
            raise ServedModelError(f"{self.client.root} ignores logprob_token_ids (vLLM >= 0.32 has it); "
                                   "use label_token_ids=false")
        if wanted is None and not honoured:
            logger.info("%s has no logprob_token_ids: every label token comes from echoed prompt log-probs",
                        self.client.root)
        return bool(honoured) if wanted is None else bool(wanted)

    # -- the transport VLLMBackend's plans run on ---------------------------------------------------

    def _params(self, request: _Request, *, read_cache: bool = True) -> dict[str, Any]:
        if request.is_prefix_request:
            return {"max_tokens": 1, "temperature": 0.0, "logprobs": 1, "logprob_token_ids": list(request.label_tokens)}
        return {"max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0.0}

    def run(self, prompts: Sequence[Sequence[int]], params: Sequence[Any], show_progress: bool = False) -> list[Any]:
        """Send token-id prompts, each with its request settings (a dict of completions-API
        fields); outputs in vLLM's shapes, in input order."""
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts for {len(params)} settings")
        # Prompts with the same settings share calls; the groups go in the order they first occur
        # (a context's own request before those that extend it, so those read it from the server's
        # prefix cache), the calls of one group concurrently.
        groups: dict[str, list[int]] = {}
        for index, settings in enumerate(params):
            groups.setdefault(json.dumps(settings, sort_keys=True), []).append(index)
        waves = [[(indices[start:start + self.prompts_per_request], dict(params[indices[0]]))
                  for start in range(0, len(indices), self.prompts_per_request)] for indices in groups.values()]
        progress = _progress(len(prompts), show_progress)

        def send(call: tuple[list[int], dict[str, Any]]) -> list[_Output]:
            indices, settings = call
            batch = [[int(t) for t in prompts[i]] for i in indices]
            payload = {"model": self.model_name, "prompt": batch if len(batch) > 1 else batch[0],
                       "return_tokens_as_token_ids": True, **settings}
            choices = self._choices(self.client.request("POST", "completions", payload), len(batch) * settings.get("n", 1))
            outputs = [self._output(batch[k], choices[k * settings.get("n", 1):(k + 1) * settings.get("n", 1)], settings)
                       for k in range(len(batch))]
            with self.client._lock:
                self.client.stats.prompts += len(batch)
                if progress is not None:
                    progress.update(len(batch))
            return outputs

        found: list[Any] = [None] * len(prompts)
        try:
            for calls in waves:
                for (indices, _), outputs in zip(calls, self.client.map(send, calls), strict=True):
                    for index, output in zip(indices, outputs, strict=True):
                        found[index] = output
        finally:
            if progress is not None:
                progress.close()
        return found

    def _choices(self, body: dict[str, Any], expected: int) -> list[dict[str, Any]]:
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or len(choices) != expected:
            got = len(choices) if isinstance(choices, list) else "no"
            raise ServedModelError(f"{self.client.root}/completions returned {got} choices for {expected} prompts")
        return sorted(choices, key=lambda c: int(c.get("index", 0)))

    def _output(self, prompt: list[int], choices: list[dict[str, Any]], settings: dict[str, Any]) -> _Output:
        if settings.get("echo"):
            return _Output([_Completion("")], prompt_logprobs=self._echoed(prompt, choices[0]))
        completions = []
        for choice in choices:
            logprobs = choice.get("logprobs")
            if settings.get("logprobs") is not None:
                if not logprobs or not logprobs.get("top_logprobs") or not logprobs.get("tokens"):
                    raise ServedModelError(f"{self.client.root} returned no log-probs for a scoring request "
                                           f"(model {self.model_name!r})")
                tables = [{_token_id(k): _Logprob(float(v)) for k, v in (row or {}).items()}
                          for row in logprobs["top_logprobs"]]
                completions.append(_Completion(choice.get("text") or "", [_token_id(t) for t in logprobs["tokens"]],
                                               tables))
            else:
                completions.append(_Completion(choice.get("text") or ""))
        return _Output(completions)

    def _echoed(self, prompt: list[int], choice: dict[str, Any]) -> list[dict[int, _Logprob] | None]:
        logprobs = choice.get("logprobs") or {}
        values = logprobs.get("token_logprobs")
        tops = logprobs.get("top_logprobs")
        if not isinstance(values, list) or len(values) < len(prompt) or not isinstance(tops, list):
            raise ServedModelError(f"{self.client.root} did not echo the prompt's log-probs (echo=true, logprobs=1); "
                                   "this server cannot score labels without logprob_token_ids")
        rows: list[dict[int, _Logprob] | None] = [None]
        for position in range(1, len(prompt)):
            value = values[position]
            if value is None:
                rows.append(None)
                continue
            best = max((float(v) for v in (tops[position] or {}).values()), default=float(value))
            rank = 1 if float(value) >= best - 1e-6 or math.isclose(float(value), best) else 2
            rows.append({prompt[position]: _Logprob(float(value), rank)})
        return rows

    # -- generation ---------------------------------------------------------------------------

    def _sampling_params(self, settings: SamplingSettings) -> dict[str, Any]:
        """``generate``'s settings (VLLMBackend's) as completions-API fields."""
        params: dict[str, Any] = {"n": settings.n, "max_tokens": settings.max_new_tokens,
                                  "temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0,
                                  "skip_special_tokens": True}
        if settings.seed is not None:
            params["seed"] = settings.seed
        if settings.stop:
            params["stop"] = list(settings.stop)
        return params

    def __repr__(self) -> str:
        return f"ServedBackend({self.client.root!r}, model={self.model_name!r})"


def _load_tokenizer(tokenizer: Any, root: Any, name: str, trust_remote_code: bool) -> Any:
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from transformers import AutoTokenizer

    candidates = [str(tokenizer)] if tokenizer is not None else [c for c in (root, name) if c]
    errors = []
    for source in candidates:
        try:
            return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            errors.append(f"{source}: {str(err).splitlines()[0][:120]}")
    raise ServedModelError(f"no tokenizer for served model {name!r} ({'; '.join(errors)}); pass tokenizer= "
                           "(a folder or hub id with the server's tokenizer)")


def _progress(total: int, show: bool) -> Any:
    if not show or not total:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="served requests")
