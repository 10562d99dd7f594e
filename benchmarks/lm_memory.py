"""Memory and time of the importance estimators on a causal LM with a large embedding (not a test).

Issue 17: does the ``per_sample`` path hold a dense per-sample gradient of the whole embedding
matrix? The model is a GPT-2 built from ``transformers.GPT2Config`` (no download) with the real
vocabulary (50257 tokens) and a small body (width 128, 2 layers, 64 positions), so the tied
embedding / lm_head matrix holds ~94 % of the parameters. The data are random token sequences
whose first half is prompt (labels −100).

Memory method: every configuration runs in a fresh subprocess. After building the model and the
data and running one no-grad forward on one sequence (kernels loaded), the process reads its
resident set size from ``/proc/self/statm`` (the baseline); a thread then samples it every
millisecond while ``dampen.importance`` runs once, and the peak minus the baseline is reported.
``ru_maxrss`` (the kernel's high-water mark of the whole process) minus the same baseline is
printed beside it as a cross-check (it cannot miss a spike, but it includes anything done before
the baseline). Seconds are the wall-clock time of that one call; the ratio to ``batch_sq`` is
within one run. Run ``python benchmarks/lm_memory.py --help`` for sizes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

import dampen
from dampen.importances.estimators import PER_SAMPLE_CHUNK_BYTES, default_chunk_size

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import PeakRSS, rss_bytes  # the speed benchmark's sampler

MB = 2**20


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    name: str
    estimator: str
    attention: str
    chunk_size: int | None = None
    one_batch: bool = False  # all sequences in one batch (lets the default chunk be reached)


CONFIGS = [
    Config("batch_sq", "batch_sq", "sdpa"),
    Config("per_sample sdpa (one by one)", "per_sample", "sdpa"),
    Config("per_sample eager (vmap, default chunk)", "per_sample", "eager"),
    Config("per_sample eager chunk_size=4", "per_sample", "eager", chunk_size=4),
    Config("per_sample eager, one batch (default chunk)", "per_sample", "eager", one_batch=True),
    Config("lf", "lf", "sdpa"),
]
BY_NAME = {c.name: c for c in CONFIGS}


def maxrss_bytes() -> int:
    """The process's resident high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gpt2_config(args: argparse.Namespace) -> GPT2Config:
    return GPT2Config(
        vocab_size=args.vocab,
        n_embd=args.width,
        n_layer=args.layers,
        n_head=args.heads,
        n_positions=args.positions,
        tie_word_embeddings=True,
    )


def make_model(args: argparse.Namespace, attention: str) -> GPT2LMHeadModel:
    """The same weights for every attention implementation (seeded construction)."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel._from_config(gpt2_config(args), attn_implementation=attention)
    got = model.config._attn_implementation
    if got != attention:
        raise RuntimeError(f"asked for {attention} attention, got {got}")
    if model.lm_head.weight is not model.transformer.wte.weight:
        raise RuntimeError("expected the lm_head to be tied to the embedding")
    return model.eval()


def make_batches(args: argparse.Namespace, batch: int) -> list[dict[str, torch.Tensor]]:
    """Random sequences; the first half of each is prompt (labels −100)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.sequences, args.tokens), generator=g)
    labels = ids.clone()
    labels[:, : args.tokens // 2] = -100
    mask = torch.ones_like(ids)
    return [
        {
            "input_ids": ids[i : i + batch],
            "attention_mask": mask[i : i + batch],
            "labels": labels[i : i + batch],
        }
        for i in range(0, args.sequences, batch)
    ]


def param_bytes_of(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def probe(args: argparse.Namespace, config: Config, out: str) -> dict[str, float]:
    """In this (fresh) process: peak RSS growth and seconds of one ``importance`` call."""
    model = make_model(args, config.attention)
    data = make_batches(args, args.sequences if config.one_batch else args.batch)
    with torch.no_grad():  # load the kernels on one sequence: tiny buffers
        model(**{k: v[:1] for k, v in data[0].items() if k != "labels"})
    base = rss_bytes()
    with warnings.catch_warnings(record=True) as caught, PeakRSS() as peak:
        warnings.simplefilter("always")
        start = time.perf_counter()
        imp = dampen.importance(
            model, data, estimator=config.estimator, chunk_size=config.chunk_size
        )
        seconds = time.perf_counter() - start
    torch.save({n: t.clone() for n, t in imp.tensors().items()}, out)
    return {
        "peak": peak.peak - base,
        "maxrss": maxrss_bytes() - base,
        "seconds": seconds,
        "fallback": float(any("one sample at a time" in str(w.message) for w in caught)),
    }


def run_probe(args: argparse.Namespace, config: Config, out: Path) -> dict[str, float]:
    """Run :func:`probe` for ``config`` in a subprocess and return its figures."""
    flags = {
        "--probe": config.name,
        "--probe-out": str(out),
        "--vocab": args.vocab,
        "--width": args.width,
        "--layers": args.layers,
        "--heads": args.heads,
        "--positions": args.positions,
        "--sequences": args.sequences,
        "--tokens": args.tokens,
        "--batch": args.batch,
    }
    command = [sys.executable, __file__] + [str(v) for kv in flags.items() for v in kv]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"the probe of {config.name!r} failed")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Over every parameter: ``max |a − b| / max |b|`` (relative to the tensor's scale)."""
    worst = 0.0
    for name, ref in b.items():
        scale = float(ref.abs().max())
        diff = float((a[name] - ref).abs().max())
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=50257, help="vocabulary (GPT-2's: 50257)")
    parser.add_argument("--width", type=int, default=128, help="n_embd")
    parser.add_argument("--layers", type=int, default=2, help="n_layer")
    parser.add_argument("--heads", type=int, default=4, help="n_head")
    parser.add_argument("--positions", type=int, default=64, help="n_positions")
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--probe", choices=list(BY_NAME), help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine's other core runs another benchmark
    if args.probe:
        print(json.dumps(probe(args, BY_NAME[args.probe], args.probe_out)))
        return

    model = make_model(args, "sdpa")
    params = sum(p.numel() for p in model.parameters())
    pbytes = param_bytes_of(model)
    embedding = model.transformer.wte.weight.numel()
    chunk = default_chunk_size(pbytes)
    print(f"date: {datetime.date.today().isoformat()}")
    print(
        f"GPT-2 from GPT2Config: vocab {args.vocab}, n_embd {args.width}, {args.layers} layers, "
        f"{args.heads} heads, n_positions {args.positions}, tied lm_head"
    )
    print(
        f"parameters {params:,} ({params / 1e6:.2f} M; embedding {embedding:,} = "
        f"{100 * embedding / params:.1f} %), parameter bytes {pbytes / MB:.1f} MB (fp32)"
    )
    print(
        f"data: {args.sequences} random sequences × {args.tokens} tokens, labels −100 on the "
        f"first {args.tokens // 2}; batches of {args.batch} (one batch of {args.sequences} "
        "where marked)"
    )
    print(
        f"per_sample default chunk: {PER_SAMPLE_CHUNK_BYTES / 2**30:g} GiB // (4 × parameter "
        f"bytes) = {chunk}"
    )
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} thread; each row in a fresh process; MB = 2^20 bytes"
    )
    print()

    results: dict[str, dict[str, float]] = {}
    values: dict[str, dict[str, torch.Tensor]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, config in enumerate(CONFIGS):
            out = Path(tmp) / f"{i}.pt"
            results[config.name] = run_probe(args, config, out)
            values[config.name] = torch.load(out, weights_only=True)

    base_seconds = results["batch_sq"]["seconds"]
    header = (
        f"{'configuration':<44} {'chunk':>12} {'peak MB':>8} {'÷ params':>8} "
        f"{'maxrss MB':>9} {'seconds':>8} {'÷ batch_sq':>10}"
    )
    print(header)
    print("-" * len(header))
    for config in CONFIGS:
        r = results[config.name]
        batch = args.sequences if config.one_batch else args.batch
        if config.estimator != "per_sample":
            used = "—"
        elif r["fallback"]:
            used = "1 (fallback)"
        else:
            size = config.chunk_size or chunk
            used = f"{min(size, batch)} of {batch}"
        peak, seconds = r["peak"], r["seconds"]
        print(
            f"{config.name:<44} {used:>12} {peak / MB:8.0f} {peak / pbytes:8.1f} "
            f"{r['maxrss'] / MB:9.0f} {seconds:8.1f} {seconds / base_seconds:10.1f}"
        )
    print()
    print(
        "peak MB: sampled RSS peak above the baseline; ÷ params: the same in parameter bytes; "
        "maxrss MB: ru_maxrss above the baseline (cross-check)"
    )

    reference = "per_sample sdpa (one by one)"
    for config in CONFIGS:
        if config.estimator == "per_sample" and config.name != reference:
            diff = max_relative_difference(values[config.name], values[reference])
            print(
                f"sanity: {config.name} vs {reference}: max relative difference {diff:.1e} "
                "(max |a − b| / max |b| per tensor, worst tensor)"
            )
    small = results["per_sample eager chunk_size=4"]
    large = results["per_sample eager (vmap, default chunk)"]
    extra = min(chunk, args.batch) - 4
    if extra > 0:
        per_sample = (large["peak"] - small["peak"]) / extra
        print(
            f"slope: each extra sample in a vmap chunk adds {per_sample / MB:.0f} MB = "
            f"{per_sample / pbytes:.2f} × parameter bytes (chunk 4 → {min(chunk, args.batch)})"
        )


if __name__ == "__main__":
    main()
