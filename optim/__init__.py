"""Lookahead and the optimizer / scheduler factory."""
from .factory import build_optimizer, build_scheduler, build_warmup, valid_optimizer_names
from .lookahead import Lookahead

__all__ = ["Lookahead", "build_optimizer", "build_scheduler", "build_warmup", "valid_optimizer_names"]
