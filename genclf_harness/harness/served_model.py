"""``genclf-served``: lm-eval's model for a served model (``vllm serve``), with exact label scoring.

    vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --port 8000
    genclf-eval --model genclf-served \\
        --model_args base_url=http://127.0.0.1:8000/v1,model=HuggingFaceTB/SmolLM2-135M-Instruct \\
        --tasks genclf_agnews --num_fewshot 5

Everything lm-eval asks of a model is ``genclf-vllm``'s (the tokenisation, label scoring through
:func:`~genclf_harness.harness.label_requests.score_requests`, rolling log-likelihoods, chat
templates), on :class:`~genclf_harness.backends.served.ServedBackend` instead of an in-process
engine. Model arguments: ``base_url`` (required), ``model`` (default: the only model served),
``tokenizer`` (default: the served model's path, then its name), ``api_key`` (default
``$OPENAI_API_KEY``), ``timeout``, ``max_retries``, ``num_concurrent``, ``prompts_per_request``,
``max_length``, ``max_gen_toks``, ``seed``, ``label_token_ids``, ``multi_token``, ``align_labels``,
``add_bos_token``, ``prefix_token_id``, ``trust_remote_code``, ``enable_thinking``/
``think_end_token``/``chat_template_args``; ``batch_size`` and ``device`` are accepted and ignored
(the server schedules its own batches on its own devices).
"""

from __future__ import annotations

import logging
from typing import Any

from lm_eval.api.model import TemplateLM

from genclf_harness.backends.served import ServedBackend
from genclf_harness.harness.label_requests import SeamRecord
from genclf_harness.harness.vllm_model import GenclfVLLM

logger = logging.getLogger(__name__)


class GenclfServed(GenclfVLLM):
    """lm-eval model ``genclf-served``: a model behind an OpenAI-compatible completions API."""

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        *,
        tokenizer: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        num_concurrent: int = 4,
        prompts_per_request: int = 32,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        seed: int = 1234,
        label_token_ids: bool | None = None,
        multi_token: str = "prefix",
        align_labels: bool = False,
        add_bos_token: bool | None = None,
        prefix_token_id: int | None = None,
        trust_remote_code: bool = False,
        enable_thinking: bool | None = None,
        think_end_token: str | None = None,
        chat_template_args: dict | None = None,
        batch_size: Any = None,
        max_batch_size: Any = None,
        device: str | None = None,
        pretrained: str | None = None,
    ) -> None:
        TemplateLM.__init__(self)  # GenclfVLLM's own __init__ starts an engine; here the server is the engine
        if not base_url:
            raise ValueError("genclf-served needs base_url=http://<host>:<port>/v1 (a running vllm serve)")
        if pretrained is not None and tokenizer is None:
            tokenizer = pretrained  # lm-eval habit: the tokenizer's source
        if enable_thinking and think_end_token is None:
            raise ValueError("enable_thinking=True needs think_end_token (the marker that ends the thinking)")
        self.backend = ServedBackend(
            base_url, model, tokenizer=tokenizer, api_key=api_key, timeout=float(timeout),
            max_retries=int(max_retries), num_concurrent=int(num_concurrent),
            prompts_per_request=int(prompts_per_request), max_length=None if max_length is None else int(max_length),
            label_token_ids=label_token_ids, multi_token=multi_token, add_special_tokens=add_bos_token,
            prefix_token_id=prefix_token_id, align_labels=bool(align_labels), trust_remote_code=bool(trust_remote_code),
        )
        self.model = None
        self.pretrained = self.backend.model_name
        self.revision = None
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id
        self.tensor_parallel_size = 1
        self.data_parallel_size = 1
        self.lora_local_path = None
        self.enable_thinking = enable_thinking
        self.think_end_token = think_end_token
        self.chat_template_args = dict(chat_template_args or {})
        self._max_gen_toks = int(max_gen_toks)
        self._seed = int(seed)
        self._dtype = "served"
        self.seam_record = SeamRecord(align_labels=bool(align_labels))
        self.tokenizer = self.backend.tokenizer

    def get_model_info(self) -> dict[str, Any]:
        return {
            "model_name_or_path": self.backend.model_name,
            "served_at": self.backend.client.root,
            "model_root": self.backend.model_root,
            "label_token_ids": self.backend.label_token_ids,
        }

    def _generation_params(self, max_gen_toks: int, stop: list[str], sampling: dict[str, Any]) -> dict[str, Any]:
        """One generation request's completions-API fields (``generate_until`` is genclf-vllm's)."""
        return {"max_tokens": max_gen_toks, "stop": stop, "seed": self._seed, **sampling}
