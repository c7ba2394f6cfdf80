"""Console scripts: genclf-eval (and, as they land, genclf-train, genclf-bench, genclf-report)."""
