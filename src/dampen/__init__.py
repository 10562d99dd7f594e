"""dampen: machine unlearning without retraining (Selective Synaptic Dampening and friends)."""

# The subpackages ``dampen.methods`` (importing it registers the built-in methods) and
# ``dampen.importance`` are imported first, so that the names ``dampen.methods`` and
# ``dampen.importance`` below end up bound to the facade functions, not to the subpackages.
import dampen.importances.store as _store  # noqa: F401
import dampen.methods as _builtin_methods  # noqa: F401
from dampen._version import __version__
from dampen.api import UnlearnResult, importance, methods, replay, unlearn
from dampen.eval import EvalReport, evaluate
from dampen.importances.store import Fingerprint, Importance

__all__ = [
    "EvalReport",
    "Fingerprint",
    "Importance",
    "UnlearnResult",
    "__version__",
    "evaluate",
    "importance",
    "methods",
    "replay",
    "unlearn",
]
