"""Task YAMLs of the fixture plugin (found through its ``lm_eval.tasks`` entry point)."""
