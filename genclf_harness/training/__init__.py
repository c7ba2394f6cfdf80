"""Training of generative classifiers and verifiers: the only code that imports TRL.

Recipes (``genclf-train <recipe> --config FILE.yaml [--set section.key=value ...]``, docs/training.md):

- `sft`: GenCLS++ warm-up, TRL's ``SFTTrainer`` (LoRA or full) on prompt-completion examples
  rendered by a prompt strategy; `sft.run_sft` is the generic runner other recipes reuse;
- `grpo`: GenCLS++ RL stage, TRL's ``GRPOTrainer`` continuing the SFT adapter with the label reward.

Building blocks:

- `config`: ``@dataclass`` config sections, YAML loading, checks before any model loads
  (`config.ConfigError`); `trainer_config`: the TRL trainer section shared by the recipes;
- `examples`: a data set's rows rendered into TRL examples (plain text or chat);
- `modeling`: the base model, LoRA, continuing a previous run's adapter;
- `evaluation`: scored (perplexity) and generative accuracy of a trained classifier;
- `rewards`: `rewards.LabelMatchReward` and `rewards.FormatReward`, picklable TRL reward functions
  usable from any TRL script (examples/grpo_label_reward.py);
- `records`: the JSONL log and the run record written beside each output.

This ``__init__`` imports nothing, so ``import genclf_harness.training.rewards`` stays light.
"""
