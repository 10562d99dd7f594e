"""Built-in unlearning methods; importing this package registers them all."""

from dampen.methods import (
    amnesiac,
    bad_teacher,
    finetune,
    jit,
    neggrad,
    potion,
    retrain,
    salun,
    scrub,
    ssd,
    unsir,
)

__all__ = [
    "amnesiac",
    "bad_teacher",
    "finetune",
    "jit",
    "neggrad",
    "potion",
    "retrain",
    "salun",
    "scrub",
    "ssd",
    "unsir",
]
