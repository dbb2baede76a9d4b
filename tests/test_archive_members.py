"""Archives whose members are not unique: an .npz table, a checkpoint or a saved model with two members of
one name is refused, naming the file and the member (``np.load`` shows one of them, another reader could
take the other: a user would train on data that ``np.load`` does not show)."""
import io
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelayer_np.run.checkpoint import CheckpointError, load_npz, save_npz_atomic
from vaelayer_np.run.data import CorruptFileError
from vaelayer_np.run.tables import load_table


def _npy(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def _zip(path, members):
    """A zip of (name, array) members in this order, duplicates included (zipfile warns and writes them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": the point of these files
        with zipfile.ZipFile(path, "w") as zf:
            for name, array in members:
                zf.writestr(name, _npy(array))
    return path


X = np.random.default_rng(0).standard_normal((30, 3))
Y = np.arange(30) % 3


@pytest.mark.parametrize("first, second", [("X.npy", "X.npy"), ("X.npy", "X"), ("y.npy", "y.npy")])
def test_an_npz_table_with_a_member_twice_is_refused_naming_file_and_member(tmp_path, first, second):
    name = first[:-4] if first.endswith(".npy") else first
    other = {"X": X[::-1] + 1.0, "y": (Y + 1) % 3}[name]
    mine = {"X": X, "y": Y}
    members = [(n + ".npy", a) for n, a in mine.items() if n != name] + [(first, mine[name]), (second, other)]
    path = _zip(tmp_path / "twice.npz", members)
    with np.load(path, allow_pickle=False) as shown:  # what the user sees: one of the two
        assert name in shown.files
    with pytest.raises(CorruptFileError, match=rf"twice\.npz: the archive holds two members named '{second}'"):
        load_table(path)


def test_a_checkpoint_or_saved_model_with_a_member_twice_is_refused(tmp_path):
    good = tmp_path / "good.npz"
    save_npz_atomic(good, {"a": np.arange(3), "b": np.ones(2)})
    with zipfile.ZipFile(good) as zf:
        members = [(i.filename, np.lib.format.read_array(zf.open(i))) for i in zf.infolist()]
    bad = _zip(tmp_path / "bad.npz", members + [("a.npy", np.arange(3) + 7)])
    with pytest.raises(CheckpointError, match=r"bad\.npz: the archive holds two members named 'a\.npy'"):
        load_npz(bad)
    from vaelayer_np import VAELayerClassifier

    with pytest.raises(ValueError, match=r"bad\.npz: the archive holds two members named 'a\.npy'"):
        VAELayerClassifier.load(bad)


_names = st.text(alphabet="abxyXY_.np0", min_size=1, max_size=6).filter(lambda n: not n.endswith("/"))


@settings(max_examples=100, deadline=None)
@given(st.lists(_names, min_size=1, max_size=5, unique_by=lambda n: n[:-4] if n.endswith(".npy") else n),
       st.data())
def test_any_archive_with_a_repeated_member_is_refused_by_both_readers(tmp_path_factory, names, data):
    repeated = data.draw(st.sampled_from(names))
    twin = data.draw(st.sampled_from([repeated, repeated[:-4] if repeated.endswith(".npy") else repeated + ".npy"]))
    order = data.draw(st.permutations(names + [twin]))
    path = _zip(tmp_path_factory.mktemp("zip") / "a.npz", [(n, np.arange(i + 1)) for i, n in enumerate(order)])
    with pytest.raises(CheckpointError, match="the archive holds two members named"):
        load_npz(path)
    with pytest.raises(CorruptFileError, match=r"a\.npz: the archive holds two members named"):
        load_table(path)
