"""A run's record of its data (data.json, with a copy in the checkpoint): deleted or edited, it never lets a
resume, ``evaluate`` or ``plot`` use changed data without a word."""
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelayer_np.cli import main
from vaelayer_np.run.checkpoint import CheckpointError, load_npz, save_npz_atomic
from vaelayer_np.run.config import TrainConfig
from vaelayer_np.run.runs import DATA_ENTRY, load_trainer, train_run

ARGS = ["--epochs", "1", "--widths", "4", "--encoder-hidden", "0", "--path", "readable", "--no-progress",
        "--no-plots"]


def _table(path, shift=0.0):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = rng.standard_normal((60, 2)) + y[:, None] * 2.0 + shift
    path.write_text("a,b,label\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{c}\n" for r, c in zip(x, y)))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    data = _table(root / "t.csv")
    run = root / "run"
    train_run(TrainConfig(data=str(data), epochs=1, widths=(4,), encoder_hidden=0, path="readable"), run_dir=run,
              progress=False, plots=False, log=lambda *a: None)
    return data, run


@pytest.fixture
def run_copy(trained, tmp_path):
    data, run = trained
    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    original = data.read_bytes()
    yield data, mine
    data.write_bytes(original)


def test_the_checkpoint_holds_a_copy_of_data_json(run_copy):
    _, run = run_copy
    copy = json.loads(str(load_npz(run / "checkpoint.npz")[DATA_ENTRY]))
    assert copy == json.loads((run / "data.json").read_text())


def test_data_json_deleted_and_the_data_changed_is_still_refused(run_copy, capsys):
    data, run = run_copy
    (run / "data.json").unlink()
    _table(data, shift=0.5)  # other data, same file name
    for command in (["evaluate", str(run)], ["plot", str(run)], ["train", "--resume", str(run), "--epochs", "2",
                                                                 "--no-progress", "--no-plots"]):
        assert main(command) == 2, command
        captured = capsys.readouterr()
        err = captured.out + captured.err
        assert "data.json is missing; the data are checked against the checkpoint's copy" in err
        assert f"{data}" in err and "changed since the run" in err
    assert not (run / "data.json").exists()  # nothing written by the refused commands


def test_data_json_deleted_with_the_data_unchanged_is_restored_on_resume(run_copy, capsys):
    data, run = run_copy
    before = json.loads((run / "data.json").read_text())
    (run / "data.json").unlink()
    assert main(["evaluate", str(run)]) == 0
    assert "data.json is missing" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress", "--no-plots"]) == 0
    assert json.loads((run / "data.json").read_text()) == before


def test_data_json_edited_to_match_changed_data_is_refused_naming_it(run_copy, capsys):
    data, run = run_copy
    _table(data, shift=0.5)
    from vaelayer_np.run.data import fingerprint_files

    (run / "data.json").write_text(json.dumps({"files": fingerprint_files([("data", data)])}))  # "fixed" by hand
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'data.json'}: differs from the copy the checkpoint holds" in err
    assert main(["evaluate", str(run), "--allow-changed-data"]) == 0
    assert "warning" in capsys.readouterr().err


def test_a_run_without_any_record_of_its_data_is_refused_unless_allowed(run_copy, capsys):
    _, run = run_copy
    (run / "data.json").unlink()
    state = load_npz(run / "checkpoint.npz")
    del state[DATA_ENTRY]  # a checkpoint of a version before the copy
    save_npz_atomic(run / "checkpoint.npz", state)
    with pytest.raises(CheckpointError, match="data.json: missing, and the checkpoint holds no copy"):
        load_trainer(run)
    assert main(["evaluate", str(run), "--allow-changed-data"]) == 0
    assert "used unchecked" in capsys.readouterr().err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["size", "sha256", "path"]), st.integers(0, 2 ** 40), st.sampled_from(["data", "other"]))
def test_any_edit_of_data_json_is_noticed(trained, tmp_path_factory, field, number, role):
    _, run = trained
    mine = tmp_path_factory.mktemp("edit") / "run"
    shutil.copytree(run, mine)
    record = json.loads((mine / "data.json").read_text())
    entry = dict(record["files"]["data"])
    entry[field] = number if field == "size" else f"{number:064x}" if field == "sha256" else f"/elsewhere/{number}"
    if entry == record["files"]["data"] and role == "data":
        return
    record["files"] = {role: entry} if role == "other" else {"data": entry}
    (mine / "data.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="data.json: differs from the copy the checkpoint holds"):
        load_trainer(mine)
