"""Prompt rendering shared by evaluation, training and verification, so train and test prompts match."""

from genclf_harness.prompts.classification import (
    ClassificationPrompt,
    join_labels,
    render_input,
    render_instruction,
)

__all__ = ["ClassificationPrompt", "join_labels", "render_input", "render_instruction"]
