"""A second lm-eval plugin for genclf-harness's tests: one model name and one task folder."""

FixtureLM = "a placeholder: tests only resolve this entry point's name, never build the model"
