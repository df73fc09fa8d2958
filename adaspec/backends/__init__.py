"""Model backends: run one model over a prompt or a draft tree and keep its KV cache."""

from adaspec.backends.hf import HFBackend
from adaspec.backends.kv import compact

__all__ = ["HFBackend", "compact"]
