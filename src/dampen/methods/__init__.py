"""Built-in unlearning methods; importing this package registers them all."""

from dampen.methods import ssd

__all__ = ["ssd"]
