"""dampen: machine unlearning without retraining (Selective Synaptic Dampening and friends)."""

from dampen._version import __version__
from dampen.api import UnlearnResult, importance, methods, unlearn
from dampen.store import Fingerprint, Importance

__all__ = [
    "Fingerprint",
    "Importance",
    "UnlearnResult",
    "__version__",
    "importance",
    "methods",
    "unlearn",
]
