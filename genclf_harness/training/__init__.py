"""Training of generative classifiers and verifiers: the only code that imports TRL."""
