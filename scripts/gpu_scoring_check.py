"""GPU check of ``genclf-bench scoring`` at realistic sizes, with randomly initialised Llamas.

Builds a Llama of each size from a config (no hub access; the default model's tokenizer, 49,152
tokens; seed 0) directly on the device in bfloat16, and runs the stock ``hf`` vs ``genclf-hf``
comparison on genclf_agnews, 1000 documents, 0-shot and 5-shot, batch 64, writing one JSON line
per size and setting. Random weights make the predictions arbitrary, but stock and genclf
score the same requests with the same weights, so exactness and agreement between them still
mean something; speed, tokens forwarded and distance from the compute bound are what it checks.

Sizes (``--sizes``): ``1.2b`` (Llama-3.2-1B shape, 1.17 B parameters), ``7.4b`` (Mistral-7B
shape, 7.38 B parameters), ``tiny`` (a few hundred thousand parameters beyond the embeddings:
for testing this path on a CPU).

On the GPU machine (Python 3.12, torch, transformers, accelerate; no lm-eval, nothing to
download), bring lm-eval as wheels in the working tree and install offline first, e.g. here:

    pip download lm-eval==0.4.13 -d shared/wheels        # plus its pure-Python dependencies
    # there (one short command; ~10 min of device time covers both sizes):
    pip install --no-index --find-links shared/wheels lm-eval==0.4.13 && pip install --no-deps -e . \
      && HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 GENCLF_DATA_DIR=shared/data \
         python scripts/gpu_scoring_check.py --output $OUT/gpu_scoring.json

The default model's tokenizer must be there too, and its weights are too big to carry: copy the
tokenizer files of the converted folder (``~/.cache/genclf_harness/models/...``: tokenizer.json,
tokenizer_config.json, special_tokens_map.json, config.json) into e.g. ``shared/smollm2-tokenizer``
and pass ``--pretrained shared/smollm2-tokenizer``.

On a CPU (the tested path):

    python scripts/gpu_scoring_check.py --sizes tiny --limit 4 --num_fewshot 0 --dtype float32 \
        --output runs/gpu_check_tiny.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genclf_harness.cli import bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1.2b,7.4b", help="comma-separated: tiny, 1.2b, 7.4b (default 1.2b,7.4b)")
    parser.add_argument("--tasks", default="genclf_agnews")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--num_fewshot", default="0,5")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_batch_tokens", type=int, default=64 * 1024,
                        help="genclf's token budget per pass (default 65536, so 64 rows of 5-shot AG News fit)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--pretrained", default="default",
                        help="where the tokenizer comes from (default: the default model's folder)")
    parser.add_argument("--output", default="runs/gpu_scoring.json", help="JSON lines, all sizes")
    args = parser.parse_args(argv)

    output = Path(args.output)
    lines: list[str] = []
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        part = output.with_name(f"{output.stem}.{size}{output.suffix}")
        command = [
            "scoring", "--random-init-llama", size, "--tasks", args.tasks, "--limit", str(args.limit),
            "--num_fewshot", args.num_fewshot, "--batch_size", str(args.batch_size),
            "--max_batch_tokens", str(args.max_batch_tokens), "--dtype", args.dtype, "--pretrained", args.pretrained, "--json", "--output", str(part),
        ]
        if args.device:
            command += ["--device", args.device]
        print(f"[gpu-check] genclf-bench {' '.join(command)}", file=sys.stderr, flush=True)
        code = bench.main(command)
        if code:
            return code
        lines.extend(part.read_text().splitlines())
        _free_device_memory()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(line + "\n" for line in lines))
    print(f"[gpu-check] wrote {output}", file=sys.stderr)
    return 0


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
