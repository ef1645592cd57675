"""Lookahead and the optimizer / scheduler factory."""
