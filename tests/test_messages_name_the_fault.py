"""Messages that name the option, column or file at fault, written as a user would meet them: a BCE
reconstruction on a table, a divergence with a huge --head-weight, CSV tables saved as UTF-16 or UTF-32
("Unicode text" in Excel and PowerShell), and binary data that is no text in any of these encodings."""
import csv
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelayer_np.cli import main
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.data import CorruptFileError
from vaelayer_np.run.runs import _name_suspects, train_run
from vaelayer_np.run.tables import load_table, text_encoding
from vaelayer_np.run.trainer import DivergenceError

ARGS = ["--epochs", "1", "--widths", "4", "--encoder-hidden", "0", "--path", "readable", "--no-progress",
        "--no-plots"]


def _rows(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.standard_normal((n, 2)) * 0.3 + y[:, None]
    return [[f"{a:.4f}", f"{b:.4f}", ["red", "grün", "青"][c]] for (a, b), c in zip(x, y)]


def _csv_text(header, rows, delimiter=",", newline="\r\n"):
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator=newline).writerows([header, *rows])
    return buf.getvalue()


# ------------------------------------------------------------------------------- BCE reconstruction on a table
def test_a_bce_reconstruction_on_a_table_names_the_setting_not_the_target(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text(_csv_text(["a", "b", "label"], _rows()))
    run = tmp_path / "run"
    assert main(["train", "--data", str(path), "--target", "label", "--recon", "bce", "--run-dir", str(run),
                 *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaelayer train: error: --recon: 'bce' reconstructs inputs in [0, 1]"), err
    assert "--target" not in err and 't.csv holds' in err and "use recon 'mse'" in err
    assert not run.exists()  # refused before anything was written
    assert main(["train", "--data", str(path), "--target", "label", "--run-dir", str(run), *ARGS]) == 0  # mse


def test_a_bce_reconstruction_with_input_dropout_names_both_settings(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--limit", "100", "--recon", "bce", "--dropout", "0.5", "--run-dir", str(run), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaelayer train: error: --recon: 'bce' reconstructs inputs in [0, 1]")
    assert "dropout 0.5" in err and "--target" not in err and not run.exists()


def test_bce_on_images_in_zero_one_still_trains(tmp_path):
    config = TrainConfig(dataset="digits", limit=100, widths=(4,), encoder_hidden=0, epochs=1, path="readable",
                         recon="bce")
    _, rows, completed = train_run(config, run_dir=tmp_path / "run", progress=False, plots=False,
                                   log=lambda *a: None)
    assert completed and len(rows) == 1


# ------------------------------------------------------------------------------- a divergence names head_weight
def test_a_divergence_with_a_huge_head_weight_names_it(tmp_path):
    config = TrainConfig(dataset="digits", limit=200, widths=(8,), encoder_hidden=0, epochs=1, path="readable",
                         head_weight=1e300)
    with pytest.raises(DivergenceError, match=r"--head-weight \(now 1e\+300"):
        train_run(config, run_dir=tmp_path / "run", progress=False, plots=False, log=lambda *a: None)


@given(st.sampled_from(["head_weight", "backprop_neg_elbo_weight", "weight_decay"]), st.floats(1e-3, 1e300),
       st.sampled_from(["training diverged: x. Start a new run with a lower --lr (now 0.001) or --output-lr (now "
                        "0.01), or a smaller --lam or --beta.", "training diverged at step 3: anything else"]))
def test_every_divergence_names_the_loss_weights_the_run_set(name, weight, message):
    text = _name_suspects(message, TrainConfig(**{name: weight}))
    assert f"--{name.replace('_', '-')} (now {weight:g}," in text and text.startswith(message.rstrip("."))
    assert _name_suspects(message, TrainConfig()) == message  # at the defaults: nothing to add
    assert "--log-var-bound above 0" in _name_suspects(message, TrainConfig(log_var_bound=0.0))


# ------------------------------------------------------------------------------- UTF-16 and UTF-32 tables
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be",
                                 "utf-8-sig"]),
       delimiter=st.sampled_from([",", ";", "\t"]), newline=st.sampled_from(["\n", "\r\n"]),
       header=st.lists(st.text(alphabet="abcé_ ü", min_size=1, max_size=6), min_size=2, max_size=2, unique=True),
       seed=st.integers(0, 5))
def test_utf16_and_utf32_tables_read_as_their_utf8_twin(tmp_path, encoding, delimiter, newline, header, seed):
    header = [h.strip() or f"c{i}" for i, h in enumerate(header)]
    if len(set(header)) < 2 or "label" in header:
        header = ["c0", "c1"]
    text = _csv_text([*header, "label"], _rows(seed=seed), delimiter, newline)
    utf8, other = tmp_path / "u8.csv", tmp_path / "other.csv"
    utf8.write_bytes(text.encode("utf-8"))
    other.write_bytes(text.encode(encoding))
    a, b = load_table(utf8, target="label"), load_table(other, target="label")
    assert a.feature_names == b.feature_names == tuple(header) and a.class_names == b.class_names
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, f"x_{split}"), getattr(b, f"x_{split}"))
        np.testing.assert_array_equal(getattr(a, f"y_{split}"), getattr(b, f"y_{split}"))


def test_the_encodings_are_recognised_from_the_first_bytes():
    text = "a,b,label\n1,2,x\n"
    assert text_encoding(text.encode("utf-8")) == "utf-8-sig"
    for encoding, expected in (("utf-16", "utf-16"), ("utf-32", "utf-32"), ("utf-16-le", "utf-16-le"),
                               ("utf-16-be", "utf-16-be"), ("utf-32-le", "utf-32-le"), ("utf-32-be", "utf-32-be")):
        assert text_encoding(text.encode(encoding)) == expected, encoding


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=8, max_size=400).filter(lambda b: b.count(0) >= len(b) // 3 and b[:1] not in (b"\xff",
                                                                                                      b"\xfe")))
def test_binary_data_is_named_binary_or_read_as_text(tmp_path, data):
    path = tmp_path / "blob.csv"
    path.write_bytes(data)
    try:
        load_table(path)
    except CorruptFileError as exc:
        assert str(exc).startswith(f"{path}: ")
    except ValueError as exc:  # a table that decodes but holds no usable rows is named by the table checks
        assert str(path) in str(exc) or "blob.csv" in str(exc)
