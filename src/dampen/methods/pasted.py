"""Pasted triggers: the identified poison's trigger on held-out images.

An identified sample's importance mixes its trigger with its content (the model also remembers
the sample). With ``heldout=`` clean images at hand, the trigger can be carried onto images the
model never trained on, whose content is of other classes:

1. **Locate** (:func:`locate_trigger`): occlude each window of the identified images in turn
   (a square of a seventh of the shorter side, at least 2 pixels, stepped by half its side; set
   to each image's minimum) and keep the window whose occlusion lowers the margin of the
   trained label most on average.
2. **Paste** (:func:`paste_trigger`): copy that window of an identified image onto each held-out
   image of another label, with the identified image's label.
3. The pasted images on which that label wins carry the trigger on foreign content; they join
   the forget set for the importance and the target, as the erased copies do
   (:mod:`dampen.methods.erased`).

Sources and held-out images are paired in the order of a checksum of their values, so the
loader's order changes nothing and a request replays exactly (with the same ``heldout``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from dampen.core.batches import default_forward
from dampen.core.state import preserved
from dampen.methods.erased import image_batch, sample_seed

PASTED_TOLERANCE = 0.075
"""The target's tolerance when pasted images join the forget set (and with them held-out
data, which re-centres the target: :mod:`dampen.methods.recentre`): a pasted image may keep
the target where the trigger overlays its content's own evidence, and the last ones cost the
most. Chosen on ``fmnist-poison``'s validation split (the 24 requests where the backdoor took
on this machine's models, every one with pasted images; ``heldout=`` comes from that split,
so its figures flatter): the most healing whose mean validation accuracy drop stays within
1.4 points. Of 5 / 7.5 / 10 / 15 %: 95.6 / 96.1 / 95.7 / 94.8 % healed at 1.94 / 1.35 / 1.29 /
0.89 points on validation; on test 94.5 / 94.7 / 94.1 / 92.8 % at 1.67 / 1.21 / 1.15 / 0.63."""

LOCATE_SAMPLES = 32
"""How many identified images the occlusion runs on at most (the first by checksum order)."""


def window_side(height: int, width: int) -> int:
    """The occluding window's side: a seventh of the shorter side, at least 2 pixels."""
    return max(2, round(min(height, width) / 7))


def checksum_order(x: Tensor) -> Tensor:
    """Indices that sort the images of ``x`` by :func:`dampen.methods.erased.sample_seed` (ties
    by position)."""
    seeds = [sample_seed(x[i]) for i in range(len(x))]
    return torch.tensor(sorted(range(len(x)), key=lambda i: (seeds[i], i)), dtype=torch.long)


def _margins(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per image: the trained label's logit minus the largest other one."""
    logits, _ = default_forward(model, (x, y))
    logits = logits.float()
    label = logits.gather(1, y.to(logits.device).long()[:, None]).squeeze(1)
    others = logits.scatter(1, y.to(logits.device).long()[:, None], float("-inf"))
    return label - others.amax(dim=1)


def _positions(length: int, side: int, step: int) -> list[int]:
    """Window starts every ``step`` pixels, and the last one flush with the far edge (a corner
    trigger must be coverable whatever the image size)."""
    starts = list(range(0, length - side + 1, step))
    if starts[-1] != length - side:
        starts.append(length - side)
    return starts


def locate_trigger(model: nn.Module, x: Tensor, y: Tensor) -> tuple[int, int, int, float]:
    """``(top, left, side, score)``: the window whose occlusion lowers the margin of ``y`` on
    ``x`` most, as the mean over the images of the drop (negative drops count as 0). Windows
    are tried row by row, the last row and column flush with the image's edges; the first of
    equal scores wins."""
    _, _, h, w = x.shape
    side = window_side(h, w)
    step = max(1, side // 2)
    lows = x.amin(dim=(1, 2, 3), keepdim=True)
    best: tuple[int, int, int, float] | None = None
    with preserved(model, grad_all=False), torch.no_grad():
        base = _margins(model, x, y)
        for top in _positions(h, side, step):
            for left in _positions(w, side, step):
                occluded = x.clone()
                occluded[:, :, top : top + side, left : left + side] = lows
                drop = float((base - _margins(model, occluded, y)).clamp(min=0).mean())
                if best is None or drop > best[3]:
                    best = (top, left, side, drop)
    assert best is not None  # side <= min(h, w): one window at least
    return best


def paste_trigger(
    held_x: Tensor, held_y: Tensor, x: Tensor, y: Tensor, window: tuple[int, int, int]
) -> tuple[Tensor, Tensor]:
    """Held-out images of labels other than their source's with the source's ``window``
    pasted in, and the sources' labels. The k-th held-out image (checksum order) takes the
    (k mod n)-th identified image (checksum order) as its source."""
    top, left, side = window
    sources = checksum_order(x)
    targets = checksum_order(held_x)
    out_x, out_y = [], []
    for k, i in enumerate(targets.tolist()):
        j = int(sources[k % len(sources)])
        if int(held_y[i]) == int(y[j]):
            continue
        rows, cols = slice(top, top + side), slice(left, left + side)
        image = held_x[i].clone()
        image[:, rows, cols] = x[j, :, rows, cols]
        out_x.append(image)
        out_y.append(y[j])
    if not out_x:
        return held_x[:0], y[:0]
    return torch.stack(out_x), torch.stack(out_y)


def _hard_labelled_images(batch: Any) -> bool:
    """An ``(images, labels)`` pair (:func:`dampen.methods.erased.image_batch`) with one
    integer label per image (soft labels name no class to paste the trigger away from)."""
    return image_batch(batch) and batch[1].dim() == 1 and not batch[1].is_floating_point()


def pasted_batches(
    model: nn.Module, identified: Iterable[Any], heldout: Iterable[Any], size: int
) -> tuple[list[tuple[Tensor, Tensor]], dict[str, Any]]:
    """Pasted images (``size`` a batch) of the identified ``(images, labels)`` batches onto the
    held-out ones, and what was done: ``{"trigger_window": [top, left, side],
    "trigger_score": s, "pasted_added": n}``. Nothing (and ``pasted_added`` 0) when either is
    not image pairs of the same shape with integer labels, or when no window's occlusion
    lowers the label's margin (``trigger_score`` ≤ 0)."""
    ids, held = list(identified), list(heldout)
    info: dict[str, Any] = {"pasted_added": 0}
    if not ids or not held or not all(_hard_labelled_images(b) for b in (*ids, *held)):
        return [], info
    x = torch.cat([b[0] for b in ids])
    y = torch.cat([b[1] for b in ids])
    held_x = torch.cat([b[0] for b in held]).to(x.device)
    held_y = torch.cat([b[1] for b in held]).to(y.device)
    if held_x.shape[1:] != x.shape[1:]:
        return [], info
    some = checksum_order(x)[:LOCATE_SAMPLES]
    top, left, side, score = locate_trigger(model, x[some], y[some])
    info.update(trigger_window=[top, left, side], trigger_score=score)
    if score <= 0.0:  # no window's occlusion lowers the margin: no trigger to paste
        return [], info
    px, py = paste_trigger(held_x, held_y, x, y, (top, left, side))
    info.update(pasted_added=len(px))
    return [(px[i : i + size], py[i : i + size]) for i in range(0, len(px), size)], info


__all__ = [
    "LOCATE_SAMPLES",
    "checksum_order",
    "locate_trigger",
    "paste_trigger",
    "pasted_batches",
    "window_side",
]
