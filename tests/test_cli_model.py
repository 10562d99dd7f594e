"""``dampen importance`` / ``dampen forget`` on a user's own model, module and files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import dampen
from conftest import loader, make_data, make_model
from dampen.cli.model import forget_cmd, importance_cmd

USER_MODULE = textwrap.dedent(
    """
    import torch
    from conftest import loader, make_data, make_model

    def factory():
        return make_model(seed=1)

    def other_factory():
        return make_model(seed=1, classes=4)

    def train_batches():
        return loader(*make_data(24), 8)

    def forget_batches():
        x, y = make_data(24)
        return loader(x[y == 2], y[y == 2], 8)

    def class_zero():
        x, y = make_data(24)
        return loader(x[y == 0], y[y == 0], 8)

    def classes_zero_and_one():
        x, y = make_data(24)
        return loader(x[y < 2], y[y < 2], 8)

    not_callable = 3

    def a_number():
        return 3

    class Sequence:  # iterable through __getitem__ alone, as Python allows
        def __init__(self, batches):
            self.batches = list(batches)

        def __getitem__(self, i):
            return self.batches[i]

    def sequence_batches():
        return Sequence(train_batches())
    """
)


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "user_mod.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in make_model(seed=1).state_dict().items()}, weights)
    return tmp_path


def _run(cmd: object, args: list[str]) -> object:
    return CliRunner().invoke(cmd, args, catch_exceptions=False)  # type: ignore[arg-type]


def test_importance_then_forget_matches_the_library(user: Path) -> None:
    imp_path, out = user / "i.safetensors", user / "w2.safetensors"
    r = _run(
        importance_cmd,
        [
            "--model",
            "user_mod:factory",
            "--weights",
            str(user / "w.safetensors"),
            "--data",
            "user_mod:train_batches",
            "--out",
            str(imp_path),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    r = _run(
        forget_cmd,
        [
            "--model",
            "user_mod:factory",
            "--weights",
            str(user / "w.safetensors"),
            "--importance",
            str(imp_path),
            "--forget",
            "user_mod:forget_batches",
            "-o",
            "alpha=1.5",
            "--out",
            str(out),
            "--update-importance",
            str(user / "next.safetensors"),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert "alpha 1.5" in r.output  # type: ignore[attr-defined]
    remaining = dampen.Importance.load(user / "next.safetensors")
    assert remaining.samples == 16 and remaining.label_counts == {0: 8, 1: 8}

    model = make_model(seed=1)
    x, y = make_data(24)
    imp = dampen.importance(model, loader(x, y, 8))
    want = dampen.unlearn(model, loader(x[y == 2], y[y == 2], 8), importance=imp, alpha=1.5)
    got = load_file(str(out))
    for k, v in want.model.state_dict().items():
        assert torch.equal(got[k], v), k


def test_forget_names_the_signed_ranking_when_it_is_kept(user: Path) -> None:
    model = make_model(seed=1)
    x, y = make_data(24)
    imp = dampen.importance(model, loader(x, y, 8))
    imp.save(user / "i.safetensors")
    want = dampen.unlearn(model, loader(x[y == 0], y[y == 0], 8), importance=imp)
    assert want.stats["auto"]["ranking"] == "signed"
    out = user / "w2.safetensors"
    args = ["--model", "user_mod:factory", "--weights", str(user / "w.safetensors")]
    args += ["--importance", str(user / "i.safetensors"), "--forget", "user_mod:class_zero"]
    r = _run(forget_cmd, [*args, "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert "; ranked by the signed candidates (only parameters" in r.output  # type: ignore[attr-defined]
    got = load_file(str(out))
    assert all(torch.equal(got[k], v) for k, v in want.model.state_dict().items())
    r = _run(forget_cmd, [*args, "--out", str(out), "--no-progress", "-o", "signed_ranking=False"])
    assert r.exit_code == 0 and "signed candidates" not in r.output  # type: ignore[attr-defined]
    both = dampen.unlearn(model, loader(x[y < 2], y[y < 2], 8), importance=imp)
    signed = sum(c["ranking"] == "signed" for c in both.stats["auto"]["per_class"])
    assert signed > 0
    args[-1] = "user_mod:classes_zero_and_one"
    r = _run(forget_cmd, [*args, "--out", str(out), "--no-progress"])
    assert f"; {signed} of 2 classes ranked by the signed candidates" in r.output  # type: ignore[attr-defined]


def _importance_fails(user: Path, model: str, data: str, message: str) -> None:
    """``dampen importance`` with these specs fails naming ``message`` and writes nothing."""
    out = user / "i.safetensors"
    weights = str(user / "w.safetensors")
    args = ["--model", model, "--weights", weights, "--data", data, "--out", str(out)]
    r = _run(importance_cmd, args)
    assert r.exit_code != 0 and message in r.output  # type: ignore[attr-defined]
    assert not out.exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("user_mod", "package.module:function"),
        ("no_such_module:f", "cannot import"),
        ("user_mod:missing", "no attribute"),
        ("user_mod:not_callable", "not callable"),
    ],
)
def test_bad_specs_are_named(user: Path, spec: str, message: str) -> None:
    _importance_fails(user, spec, "user_mod:train_batches", message)


def test_a_batch_function_returning_no_batches_is_named(user: Path) -> None:
    want = "--data 'user_mod:a_number' returned int, not an iterable of batches"
    _importance_fails(user, "user_mod:factory", "user_mod:a_number", want)
    out = user / "i.safetensors"  # a sequence iterable through __getitem__ alone is batches
    args = ["--model", "user_mod:factory", "--weights", str(user / "w.safetensors")]
    r = _run(importance_cmd, [*args, "--data", "user_mod:sequence_batches", "--out", str(out)])
    assert r.exit_code == 0 and out.exists()  # type: ignore[attr-defined]


def test_mismatched_files_are_refused_and_nothing_written(user: Path) -> None:
    weights = str(user / "w.safetensors")
    r = _run(
        importance_cmd,
        [
            "--model",
            "user_mod:other_factory",
            "--weights",
            weights,
            "--data",
            "user_mod:train_batches",
            "--out",
            str(user / "i.st"),
        ],
    )
    assert r.exit_code != 0 and "does not fit the model" in r.output  # type: ignore[attr-defined]

    # An importance made for other weights.
    other = dampen.importance(make_model(seed=7), loader(*make_data(24), 8))
    other.save(user / "other.safetensors")
    out = user / "w2.safetensors"
    args = [
        "--model",
        "user_mod:factory",
        "--weights",
        weights,
        "--importance",
        str(user / "other.safetensors"),
        "--forget",
        "user_mod:forget_batches",
        "--out",
        str(out),
    ]
    r = _run(forget_cmd, args)
    assert r.exit_code != 0 and "different weights" in r.output  # type: ignore[attr-defined]
    assert not out.exists()
    r = _run(forget_cmd, [*args, "-o", "alpha=0"])
    assert r.exit_code != 0
    r = _run(forget_cmd, [*args, "--allow-changed-weights", "-o", "alpha=ten"])
    assert r.exit_code != 0 and """a number > 0 or "auto"; got 'ten'""" in r.output  # type: ignore[attr-defined]
    assert not out.exists()
    r = _run(forget_cmd, [*args[:-2], "--out", str(out), "-o", "alpha", "--allow-changed-weights"])
    assert r.exit_code != 0 and "key=value" in r.output  # type: ignore[attr-defined]
    assert not out.exists()
    r = _run(forget_cmd, [*args, "--allow-changed-weights", "-o", "alpha=1"])
    assert r.exit_code == 0 and out.exists()  # type: ignore[attr-defined]


def test_cli_warnings_name_the_options_and_not_the_source_line() -> None:
    import warnings

    import click
    from click.testing import CliRunner

    import dampen.cli
    from dampen.cli import cli_warning, main
    from dampen.methods.auto_alpha import BLIND_NO_HARM

    message = UserWarning(BLIND_NO_HARM["samples"][0])
    text = cli_warning(message, UserWarning)
    assert text.startswith('UserWarning: alpha="auto" left the model unchanged')
    assert "needs --heldout (samples" in text and "(or --kind class if" in text
    assert "a numeric alpha (-o alpha=...)" in text
    assert "heldout=" not in text and "forget_kind" not in text
    # While a command runs, the library's warnings are shown so and other code's as before;
    # afterwards the previous formatter is back.
    before = warnings.formatwarning
    library = str(Path(dampen.cli.__file__).parent / "model.py")
    seen: list[str] = []

    @click.command("probe")
    def probe() -> None:
        seen.append(warnings.formatwarning("x heldout= y", UserWarning, library, 1))
        seen.append(warnings.formatwarning("heldout=3", DeprecationWarning, "/user/m.py", 7))

    main.add_command(probe)
    try:
        assert CliRunner().invoke(main, ["probe"]).exit_code == 0
    finally:
        main.commands.pop("probe")
    assert seen[0] == "UserWarning: x --heldout y\n"
    assert seen[1] == before("heldout=3", DeprecationWarning, "/user/m.py", 7)
    assert warnings.formatwarning is before
