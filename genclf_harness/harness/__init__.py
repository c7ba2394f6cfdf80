"""The only layer that imports lm-eval: model adapters, metrics, task helpers, registration."""
