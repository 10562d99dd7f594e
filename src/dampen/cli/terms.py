"""The library's words as the command line says them."""

from __future__ import annotations

import re


def cli_terms(text: str) -> str:
    """``text`` with the Python API's ``heldout=``, ``forget_kind="..."`` and numeric
    ``alpha`` named as the options that set them (``--heldout``, ``--kind``, ``-o alpha=``)."""
    text = re.sub(r'forget_kind="(\w+)"', r"--kind \1", text)
    text = re.sub(r"\bheldout=(?![\w'\"])", "--heldout", text)
    return text.replace("a numeric alpha", "a numeric alpha (-o alpha=...)")
