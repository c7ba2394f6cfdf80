"""GRPO with a generative verifier (GenRM) as the reward, in a plain TRL script.

`GenRMReward` is an ordinary TRL reward function: a picklable object with a ``__name__`` and TRL's
``reward(prompts, completions, completion_ids=None, **columns)`` signature. It scores each
completion by the verifier's P("Yes") to "Is the answer correct (Yes/No)?" for the problem in the
dataset column ``question`` (keep ``remove_unused_columns=False`` so the column reaches it). Here
the policy learns last-letter concatenation, rewarded by a verifier trained with
``genclf-train genrm`` (or ``genclf-bench bon``), beside an exact-match reward for reference.

Run (a few steps on the default model, CPU)::

    genclf-train genrm --config configs/genrm_last_letter_cpu.yaml      # -> runs/genrm_last_letter_cpu
    python examples/grpo_with_genrm_reward.py --verifier runs/genrm_last_letter_cpu --steps 4
"""

from __future__ import annotations

import argparse

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from genclf_harness.backends.default_model import ensure_default_model
from genclf_harness.training.genrm_reward import GenRMReward
from genclf_harness.verifiers.genrm.problems import LAST_LETTER


class ExactAnswerReward:
    """1 if the completion's final answer is the gold answer (for comparison in the logs)."""

    __name__ = "exact_answer"

    def __call__(self, prompts, completions, completion_ids=None, *, answer, **columns):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(LAST_LETTER.is_correct(text, gold)) for text, gold in zip(texts, answer)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verifier", default="default",
                        help="a verifier folder from genclf-train genrm ('default': the untrained embedded model)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--output-dir", default="runs/example_grpo_genrm")
    args = parser.parse_args()

    # Prompts: the task's few-shot chat turns (the same prompt best-of-N samples with); the
    # question and gold answer travel as columns for the rewards.
    problems = LAST_LETTER.problems("train", 32, seed=7)
    demos = [{"role": role, "content": text} for question, solution in LAST_LETTER.demonstrations
             for role, text in (("user", question), ("assistant", solution))]
    dataset = datasets.Dataset.from_list([
        {"prompt": [*demos, {"role": "user", "content": p.question}], "question": p.question, "answer": p.answer}
        for p in problems
    ])

    verifier_reward = GenRMReward(args.verifier)   # loads lazily; pickles as its settings
    exact = ExactAnswerReward()

    base = str(ensure_default_model())
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = GRPOConfig(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=64,
        temperature=0.8,
        learning_rate=1e-5,
        beta=0.0,
        reward_weights=[1.0, 0.0],              # train on the verifier; log the exact answer beside it
        remove_unused_columns=False,            # "question" and "answer" must reach the rewards
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[verifier_reward, exact], args=config,
                          train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    for entry in trainer.state.log_history:
        if "rewards/genrm/mean" in entry:
            print(f"step {entry['step']}: verifier reward {entry['rewards/genrm/mean']:.3f}, "
                  f"exact answer {entry['rewards/exact_answer/mean']:.2f}")


if __name__ == "__main__":
    main()
