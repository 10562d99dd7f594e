"""The demo behind ``make demo``: real training on digits, every row, auto's guard helps."""

from __future__ import annotations

from pathlib import Path

from dampen.cli.demo import format_table, run_demo


def test_demo_rows_and_what_they_show(tmp_path: Path) -> None:
    rows = run_demo(0, seed=0, out_dir=tmp_path)
    by_name = {r.method: r for r in rows}
    assert list(by_name) == [
        "original",
        "retrain",
        "SSD (stored I_D)",
        "SSD (I_D on the fly)",
        "ASSD (stored I_D)",
        "SSD auto (stored I_D)",
        "SSD auto + heldout",
    ]
    assert (tmp_path / "digits-cnn.importance.safetensors").is_file()
    assert by_name["original"].forget_acc > 0.9 and by_name["retrain"].forget_acc == 0.0
    # The stored importance and the one computed on the fly give the same SSD.
    stored, fly = by_name["SSD (stored I_D)"], by_name["SSD (I_D on the fly)"]
    assert (stored.forget_acc, stored.selected) == (fly.forget_acc, fly.selected)
    # With held-out samples as its guard, auto reaches the class target (≤ 1 %) and keeps Dr.
    guarded = by_name["SSD auto + heldout"]
    assert guarded.forget_acc <= 0.01
    assert guarded.retain_acc >= by_name["original"].retain_acc - 0.01
    table = format_table(rows)
    assert table.count("\n") == len(rows) + 1 and "SSD auto + heldout" in table


def test_the_cli_demo_removes_its_temporary_folder() -> None:
    from click.testing import CliRunner

    from dampen.cli import main

    result = CliRunner().invoke(main, ["demo", "--epochs", "1", "--forget-class", "3"])
    assert result.exit_code == 0, result.output
    assert "forgetting class 3" in result.output
    [line] = [s for s in result.output.splitlines() if s.startswith("importance of D")]
    stored = Path(line.split(" at ", 1)[1].split(" (a temporary folder")[0])
    assert stored.name == "digits-cnn.importance.safetensors"
    assert not stored.parent.exists()  # removed once the requests were done
