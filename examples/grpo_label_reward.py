"""GRPO with genclf's label rewards in a plain TRL script (no genclf-train, no config file).

The rewards are ordinary TRL reward functions: picklable objects with a ``__name__`` and TRL's
``reward(prompts, completions, completion_ids=None, **columns)`` signature. The gold label reaches
them as a dataset column (``label``), so keep ``remove_unused_columns=False``.

Run (a few steps on the default model, CPU; start from an SFT adapter for a useful signal)::

    GENCLF_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \\
        python examples/grpo_label_reward.py --adapter runs/sft_sst2_cpu --steps 4
"""

from __future__ import annotations

import argparse

import datasets
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from genclf_harness.backends.default_model import ensure_default_model
from genclf_harness.data import get_spec, load_split
from genclf_harness.prompts import PromptStrategy
from genclf_harness.training.rewards import FormatReward, LabelMatchReward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default=None, help="an SFT LoRA adapter folder to continue (recommended)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--output-dir", default="runs/example_grpo")
    args = parser.parse_args()

    # Prompts: the same renderer genclf's tasks and genclf-train use (plain text, zero-shot).
    spec = get_spec("sst2")
    prompter = PromptStrategy.parse("zero").bind(spec)
    rows = load_split("sst2", "train")[:64]
    dataset = datasets.Dataset.from_list(
        [{"prompt": prompter.render(row).prompt, "label": row["label"]} for row in rows]
    )

    # Rewards: 1/0 for the right label, plus a light bonus for answering with a bare label.
    label_match = LabelMatchReward(spec.label_words)          # or LabelMatchReward.for_dataset("sst2")
    label_format = FormatReward(spec.label_words)

    base = str(ensure_default_model())
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if args.adapter:
        model = PeftModel.from_pretrained(model, args.adapter, is_trainable=True)

    config = GRPOConfig(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=6,
        temperature=1.0,
        learning_rate=5e-5,
        beta=0.0,
        reward_weights=[1.0, 0.1],
        remove_unused_columns=False,            # the "label" column must reach LabelMatchReward
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        gradient_checkpointing=False,
        logging_steps=1,
        report_to="none",
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[label_match, label_format], args=config,
                          train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    for entry in trainer.state.log_history:
        if "rewards/label_match/mean" in entry:
            print(f"step {entry['step']}: label_match {entry['rewards/label_match/mean']:.2f}, "
                  f"label_format {entry['rewards/label_format/mean']:.2f}")


if __name__ == "__main__":
    main()
