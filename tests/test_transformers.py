"""Sequence classifiers of the transformers library: dict batches, outputs with ``.logits``."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import dampen

transformers = pytest.importorskip("transformers")


def _tiny_bert() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def _batches(n: int = 12, size: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (n, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, 6:] = 0  # some padding
    labels = torch.arange(n) % 3
    return [
        {
            "input_ids": ids[i : i + size],
            "attention_mask": mask[i : i + size],
            "labels": labels[i : i + size],
        }
        for i in range(0, n, size)
    ]


@pytest.mark.parametrize("method", ["ssd", "lfssd", "assd", "alf"])
def test_every_ssd_method_runs_on_a_transformers_model(method: str) -> None:
    model = _tiny_bert()
    data = _batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    estimator = "lf" if method in ("lfssd", "alf") else "batch_sq"
    imp = dampen.importance(model, data, estimator=estimator)
    options = {} if method in ("assd", "alf") else {"alpha": 1.0}
    result = dampen.unlearn(model, data[:1], method=method, importance=imp, **options)
    assert result.stats["selected"] > 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    changed = [k for k, v in result.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed


def test_per_sample_on_a_transformers_model_matches_a_loop() -> None:
    model = _tiny_bert()
    data = _batches()
    with pytest.warns(RuntimeWarning, match="one sample at a time"):
        imp = dampen.importance(model, data, estimator="per_sample")
    model.eval()
    params = dict(model.named_parameters())
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in data:
        for i in range(len(batch["labels"])):
            one = {k: v[i : i + 1] for k, v in batch.items()}
            labels = one.pop("labels")
            loss = F.cross_entropy(model(**one).logits, labels)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for n, g in zip(params, grads, strict=True):
                if g is not None:
                    want[n] += g**2
    for n in want:
        torch.testing.assert_close(imp[n], want[n] / 12, rtol=1e-4, atol=1e-10)
