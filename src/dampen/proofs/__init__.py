"""Per-example evidence drivers: U-LiRA and the NeurIPS 2023 challenge score.

They train shadow models and unlearn them through :mod:`dampen.bench`'s cache and runner; the
pure maths they feed is in :mod:`dampen.eval.ulira` and :mod:`dampen.eval.challenge`.
"""
