"""``vaelayer reproduce``: every option is checked before anything is written (the output folder included)."""
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaelayer_np.cli import main
from vaelayer_np.run.tables import SEED_LIMIT
from vaelayer_np.tools import reproduce
from vaelayer_np.tools.reproduce import parse_seeds, run_reproduce


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0,4294967296"], "--seeds: seed 4294967296 is out of range"),
    (["--digits-seeds", "99999999999999999999"], "--digits-seeds: seed 99999999999999999999 is out of range"),
    (["--seeds", "1,x"], "--seeds: expected comma-separated integers"),
    (["--scheduler", "not-an-address"], "--scheduler: 'not-an-address' is not the address of a Dask scheduler"),
    (["--scheduler", "tcp://127.0.0.1:99999"], "--scheduler: 'tcp://127.0.0.1:99999': port 99999"),
    (["--jobs", "0"], "--jobs: expected a positive integer"),
    (["--epochs", "0"], "--epochs: expected a positive integer"),
    (["--only", "no-such-experiment"], "--only: unknown experiments"),
])
def test_a_bad_option_is_named_and_nothing_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["reproduce", "--out", str(out), "--only", "digits-iffcl", *argv]) == 2
    err = capsys.readouterr().err
    assert f"vaelayer reproduce: error: {message}" in err, err
    assert not out.exists()


def test_out_and_write_docs_that_are_files_are_named_first(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("mine")
    with pytest.raises(ValueError, match="^--out: .* is a file"):
        run_reproduce(afile, only="digits-iffcl", epochs=1, log=lambda s: None)
    with pytest.raises(ValueError, match="^--write-docs: .* is a file"):
        run_reproduce(tmp_path / "out", only="digits-iffcl", epochs=1, write_docs=afile, log=lambda s: None)
    assert afile.read_text() == "mine" and not (tmp_path / "out").exists()


def test_an_experiment_with_invalid_settings_is_named_before_any_run(tmp_path, monkeypatch):
    good = reproduce.EXPERIMENTS["digits-iffcl"]
    bad = dataclasses.replace(good, name="digits-typo", settings=dict(good.settings, lr=-1.0))
    monkeypatch.setitem(reproduce.EXPERIMENTS, "digits-typo", bad)
    with pytest.raises(ValueError, match="^experiment digits-typo: its settings are not valid"):
        run_reproduce(tmp_path / "out", only="digits-iffcl,digits-typo", epochs=1, log=lambda s: None)
    assert not (tmp_path / "out").exists()


@given(st.lists(st.integers(-5, 2 ** 70), min_size=1, max_size=4))
def test_seeds_in_range_pass_unchanged_and_others_are_refused_naming_the_flag(seeds):
    text = ",".join(map(str, seeds))
    ok = len(set(seeds)) == len(seeds) and all(0 <= s < SEED_LIMIT for s in seeds)
    if ok:
        assert parse_seeds(text) == seeds
    else:
        with pytest.raises(ValueError, match="^--seeds: "):
            parse_seeds(text)
