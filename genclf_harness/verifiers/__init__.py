"""Generative verifiers: GenRM P("Yes") scoring, chain-of-thought voting, best-of-N, judges."""
