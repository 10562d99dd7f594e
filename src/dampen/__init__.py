"""dampen: machine unlearning without retraining (Selective Synaptic Dampening and friends)."""

# The subpackage dampen.methods registers the built-in methods; it is imported first so that
# the name ``dampen.methods`` below ends up bound to the function that lists them.
import dampen.methods as _builtin_methods  # noqa: F401
from dampen._version import __version__
from dampen.api import UnlearnResult, importance, methods, unlearn
from dampen.eval import EvalReport, evaluate
from dampen.store import Fingerprint, Importance

__all__ = [
    "EvalReport",
    "Fingerprint",
    "Importance",
    "UnlearnResult",
    "__version__",
    "evaluate",
    "importance",
    "methods",
    "unlearn",
]
