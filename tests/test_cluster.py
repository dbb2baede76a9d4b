"""``vaelayer reproduce --scheduler``: the runs handed to a Dask distributed cluster (here a local one on 127.0.0.1)."""
import json

import pytest

distributed = pytest.importorskip("distributed")  # the optional extra "cluster", installed by .ci/run

from vaelayer_np.tools.reproduce import run_reproduce  # noqa: E402


@pytest.fixture
def cluster():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as local:
        yield local


def test_reproduce_runs_on_a_dask_cluster(tmp_path, cluster):
    out = tmp_path / "out"
    lines = []
    code = run_reproduce(out, only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=1, limit=300,
                         scheduler=cluster.scheduler_address, log=lines.append)
    assert code == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "on the cluster at tcp://127.0.0.1" in text and "done  digits-iffcl seed 0" in text
    rows = [json.loads(line) for line in (out / "digits-iffcl" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] == 1 and 0.0 <= rows[-1]["val_acc"] <= 1.0
    assert (out / "digits-iffcl" / "seed0.log").read_text().strip()
    assert "digits-iffcl" in (out / "results.md").read_text()
    # a second call finds the run finished (the folder came back from the worker) and reuses it
    lines.clear()
    assert run_reproduce(out, only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=1, limit=300,
                         scheduler=cluster.scheduler_address, log=lines.append) == 0
    assert "finished before, reused" in (out / "digits-iffcl" / "seed0.log").read_text()


def test_an_unreachable_scheduler_is_named(tmp_path):
    with pytest.raises(ValueError, match="--scheduler: cannot reach"):
        run_reproduce(tmp_path / "out", only="digits-iffcl", seeds=(0,), digits_seeds=[0], epochs=1, limit=100,
                      scheduler="tcp://127.0.0.1:1", log=lambda s: None)
