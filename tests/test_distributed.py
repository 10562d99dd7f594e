"""Importance under torch.distributed (gloo, two processes on loopback) equals one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dampen
from conftest import loader, make_data, make_model
from dampen.importances.distributed import shard_batches

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(tmp_path: Path, mode: str) -> None:
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            WORLD_SIZE="2",
            PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HERE / "dist_worker.py"), str(tmp_path), mode],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out


@pytest.mark.parametrize("mode", ["shard", "sampler", "ddp"])
def test_two_gloo_ranks_equal_one_process(tmp_path: Path, mode: str) -> None:
    _launch(tmp_path, mode)
    x, y = make_data(40)
    model = make_model()
    for estimator in ("batch_sq", "per_sample", "shuffled_sq", "lf"):
        single = dampen.importance(model, loader(x, y, 8), estimator=estimator)
        both = dampen.Importance.load(tmp_path / f"{mode}-{estimator}.safetensors", model=model)
        assert (both.units, both.samples, both.batches) == (
            single.units,
            single.samples,
            single.batches,
        )
        assert both.batch_size == 8 and both.label_counts == single.label_counts
        for n in single:
            torch.testing.assert_close(both[n], single[n], rtol=1e-5, atol=1e-10)


def test_shard_batches_partitions() -> None:
    items = list(range(7))
    shares = [list(shard_batches(items, r, 3)) for r in range(3)]
    assert sorted(i for share in shares for i in share) == items and shares[1] == [1, 4]
    with pytest.raises(ValueError, match="rank"):
        list(shard_batches(items, 3, 3))
