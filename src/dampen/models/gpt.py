"""A tiny GPT-2 built from a config (no download), for language-model unlearning tasks.

``transformers`` is an optional extra (``pip install 'dampen[transformers]'``); it is imported
only when :func:`tiny_gpt2` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dampen.models._checks import positive_int

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel


def tiny_gpt2(
    vocab_size: int,
    n_positions: int,
    *,
    n_layer: int = 2,
    n_embd: int = 128,
    n_head: int = 4,
    seed: int = 0,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
    attn_implementation: str = "eager",
) -> GPT2LMHeadModel:
    """A freshly initialised ``GPT2LMHeadModel`` with every dropout off, so it can memorise.

    The weights are drawn from ``seed`` inside a forked random state (the caller's global
    random state is left alone). Input and output embeddings are tied, as in GPT-2.

    Args:
        vocab_size: number of tokens.
        n_positions: longest sequence the model can read.
        n_layer: transformer blocks.
        n_embd: width of the residual stream; a multiple of ``n_head``.
        n_head: attention heads per block.
        seed: seed of the initial weights.
        pad_token_id: the padding token (also used by ``generate``).
        eos_token_id: the end-of-sequence token (also used as ``bos_token_id``).
        attn_implementation: ``"eager"`` (plain PyTorch, works with ``torch.func``) or
            ``"sdpa"``.

    Raises:
        ImportError: if ``transformers`` is not installed.
        ValueError: if a size is not a positive int or ``n_embd`` is not a multiple of
            ``n_head``.
    """
    for name, value in (
        ("vocab_size", vocab_size),
        ("n_positions", n_positions),
        ("n_layer", n_layer),
        ("n_embd", n_embd),
        ("n_head", n_head),
    ):
        positive_int(name, value)
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} must be a multiple of n_head={n_head}")
    try:
        from transformers import AutoModelForCausalLM, GPT2Config
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "tiny_gpt2 needs the transformers package: pip install 'dampen[transformers]'"
        ) from exc
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: GPT2LMHeadModel = AutoModelForCausalLM.from_config(
            config, attn_implementation=attn_implementation
        )
    return model
