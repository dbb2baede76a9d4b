"""The ablation and moonshot experiments of ``vaelayer reproduce``: the catalogue, the per-layer figures, the table."""
import itertools
import json

import numpy as np
import pytest

from vaelayer_np.run.config import TrainConfig
from vaelayer_np.tools import reproduce


def test_the_ablation_holds_every_combination_at_one_rule():
    combos = set()
    for name, heads, lam, beta, _ in reproduce.ABLATION:
        exp = reproduce.EXPERIMENTS[name]
        cfg = TrainConfig(**exp.settings)
        combos.add((cfg.head_weight, cfg.lam, cfg.beta))
        # the same budget and learning rates for every row: no row has a grid of its own
        assert (cfg.dataset, cfg.epochs, cfg.lr, cfg.output_lr, cfg.lr_schedule) == ("fashion-mnist", 10, 1e-3, 0.01,
                                                                                     "cosine")
        assert (cfg.head_weight, cfg.lam, cfg.beta) == (heads, lam, beta)
        assert exp.grid_seeds == "all"
    assert combos == set(itertools.product((0.0, 3.0), (0.0, 10.0), (0.0, 1e-3)))
    for name in reproduce.ABLATION_BASELINES:
        assert TrainConfig(**reproduce.EXPERIMENTS[name].settings).epochs == 10
    digits = set()
    for name, *_ in reproduce.DIGITS_ABLATION:
        cfg = TrainConfig(**reproduce.EXPERIMENTS[name].settings)
        assert (cfg.dataset, cfg.epochs, cfg.lr, cfg.beta) == ("digits", 50, 1e-3, 1e-3)
        digits.add((cfg.head_weight, cfg.lam))
    assert digits == set(itertools.product((0.0, 3.0), (0.0, 10.0)))


def test_the_moonshot_gives_every_method_the_same_recipe_and_grid():
    groups = {}
    for exp in reproduce.EXPERIMENTS.values():
        if exp.name.startswith("fashion-moon-"):
            cfg = TrainConfig(**exp.settings).validate()
            groups.setdefault(exp.group, []).append((cfg.dropout, cfg.epochs, cfg.augment_shift, cfg.augment_flip,
                                                     tuple(cfg.widths or ())))
            assert exp.grid_seeds == "first" and exp.name != exp.group  # points on seed 0, the chosen on all
    assert len(groups) == 3
    grids = {tuple(sorted(points)) for points in groups.values()}
    assert len(grids) == 1


def test_per_layer_figures_and_the_ablation_table(tmp_path, monkeypatch):
    """A tiny run of one ablation row (on digits, 1 epoch): layers.json per layer, and the table shows those figures."""
    exp = reproduce.EXPERIMENTS["fashion-iffcl-heads-nokl"]
    small = reproduce.Experiment(exp.name, dict(dataset="digits", epochs=1, head_weight=3.0, lam=10.0, beta=0.0,
                                                 widths=(16, 12)), exp.purpose, exp.group)
    monkeypatch.setitem(reproduce.EXPERIMENTS, exp.name, small)
    assert reproduce.run_one(small, 0, tmp_path, limit=300, log=lambda *a: None)
    figures = json.loads((tmp_path / exp.name / "seed0" / reproduce.LAYERS_FILE).read_text())
    assert [r["layer"] for r in figures["layers"]] == [0, 1]
    for r in figures["layers"]:
        assert 0.0 <= r["probe_test"] <= 1.0 and 0.0 <= r["head_test"] <= 1.0 and r["recon"] > 0 and r["kl"] >= 0
    lines = reproduce.ablation_table(tmp_path, [exp.name], [0], 1, {})
    row = next(line for line in lines if line.startswith(f"| {exp.name} |"))
    probes = " / ".join(f"{100 * r['probe_test']:.1f}" for r in figures["layers"])
    assert "| 1/1 |" in row and probes in row
    # a seed without a finished run is counted missing, never guessed
    lines = reproduce.ablation_table(tmp_path, [exp.name], [0, 1], 1, {})
    assert "| 1/2 |" in next(line for line in lines if line.startswith(f"| {exp.name} |"))


def test_an_iffcl_run_reports_each_twin_alone_and_a_one_network_run_none(tmp_path, monkeypatch):
    """layers.json holds the test accuracy of the twins averaged (the run's prediction: its last metrics row) and
    of each twin alone; an older layers.json without them gets them when the run is met again."""
    small = reproduce.Experiment("fashion-iffcl-heads", dict(dataset="digits", epochs=1, head_weight=3.0,
                                                             widths=(16, 12)), "iffcl", "fashion-iffcl-heads")
    monkeypatch.setitem(reproduce.EXPERIMENTS, small.name, small)
    assert reproduce.run_one(small, 0, tmp_path, limit=300, log=lambda *a: None)
    run = tmp_path / small.name / "seed0"
    figures = json.loads((run / reproduce.LAYERS_FILE).read_text())
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert figures["twins"]["both"] == pytest.approx(last["test_acc"], abs=1e-12)
    assert all(0.0 < figures["twins"][k] <= 1.0 for k in ("a", "b"))
    del figures["twins"]
    (run / reproduce.LAYERS_FILE).write_text(json.dumps(figures))
    assert reproduce.run_one(small, 0, tmp_path, limit=300, log=lambda *a: None)  # finished before: reused
    assert json.loads((run / reproduce.LAYERS_FILE).read_text())["twins"]["both"] == pytest.approx(last["test_acc"])
    one = reproduce.Experiment("fashion-local-heads", dict(dataset="digits", epochs=1, method="local-heads",
                                                           widths=(16, 12)), "local-heads", "fashion-local-heads")
    monkeypatch.setitem(reproduce.EXPERIMENTS, one.name, one)
    assert reproduce.run_one(one, 0, tmp_path, limit=300, log=lambda *a: None)
    assert json.loads((tmp_path / one.name / "seed0" / reproduce.LAYERS_FILE).read_text())["twins"] is None


def test_a_local_heads_run_has_no_reconstruction_to_report(tmp_path, monkeypatch):
    small = reproduce.Experiment("fashion-local-heads", dict(dataset="digits", epochs=1, method="local-heads",
                                                             widths=(16, 12)), "local-heads", "fashion-local-heads")
    monkeypatch.setitem(reproduce.EXPERIMENTS, small.name, small)
    assert reproduce.run_one(small, 0, tmp_path, limit=300, log=lambda *a: None)
    figures = json.loads((tmp_path / small.name / "seed0" / reproduce.LAYERS_FILE).read_text())
    assert all(r["recon"] is None and r["kl"] is None and r["probe_test"] > 0.2 for r in figures["layers"])
    with pytest.raises(ValueError, match="head_weight"):
        TrainConfig(dataset="digits", method="local-heads", head_weight=3.0).validate()


def test_the_moonshot_table_tells_a_group_never_run_from_one_started(tmp_path):
    """A moonshot group with no finished point is "not run" until one of its run folders exists."""
    from vaelayer_np.tools.reproduce.report import moonshot_section

    names = [n for n in reproduce.EXPERIMENTS if n.startswith("fashion-moon-")]
    seeds = {n: [0, 1, 2] for n in names}

    def state(group):
        lines = moonshot_section(tmp_path, names, seeds, None, {})
        row = next(line for line in lines if line.startswith(f"| {group} |"))
        return row.split("|")[2].strip()

    assert state("fashion-moon-iffcl") == "not run"
    (tmp_path / "fashion-moon-iffcl-aug" / "seed0").mkdir(parents=True)
    assert state("fashion-moon-iffcl") == "started, no point finished yet"
    assert state("fashion-moon-backprop") == "not run"


def test_the_moonshot_grid_table_shows_every_point_on_the_seeds_it_finished(tmp_path):
    """Each grid point gets a row: not run, unfinished with its epochs, or the figures of the seeds it finished; the
    chosen is marked, and every method has the same points."""
    from vaelayer_np.tools.reproduce.report import moonshot_section

    names = [n for n in reproduce.EXPERIMENTS if n.startswith("fashion-moon-")]
    seeds = {n: [0, 1, 2] for n in names}
    point = "fashion-moon-local-heads-drop0.1"
    run = tmp_path / point / "seed0"
    run.mkdir(parents=True)
    rows = [dict(epoch=e, train_acc=0.9, val_acc=0.8 + e / 1000, test_acc=0.85, seconds=10.0) for e in range(1, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def grid_row(name, epochs, chosen):
        lines = moonshot_section(tmp_path, names, seeds, epochs, chosen)
        return next(line for line in lines if line.startswith(f"| {name} ") and "seconds" not in line)

    assert "| not run |" in grid_row("fashion-moon-iffcl-aug", None, {})
    assert "unfinished (3/60 epochs)" in grid_row(point, None, {})
    finished = grid_row(point, 3, {"fashion-moon-local-heads": point})
    assert finished.startswith(f"| {point} (chosen) | seed 0 | 90.00 | 85.00 | - | 80.30 | 30 |")
    # a point with more seeds finished (chosen before the grid grew) shows them all, mean ± std
    other = tmp_path / point / "seed2"
    other.mkdir()
    rows = [dict(r, test_acc=0.87) for r in rows]
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert grid_row(point, 3, {}).startswith(f"| {point} | seeds 0, 2 | 90.00 ± 0.00 | 86.00 ± 1.41 | - | "
                                             "80.30 ± 0.00 |")
    # IFFCL's twins alone, from layers.json: shown when every finished seed has them, never guessed
    twin_point = "fashion-moon-iffcl-drop0.1"
    for seed, (a, b) in ((0, (0.84, 0.80)), (1, (0.86, 0.82))):
        run = tmp_path / twin_point / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / reproduce.LAYERS_FILE).write_text(json.dumps({"layers": [], "twins": {"both": 0.87, "a": a, "b": b}}))
    assert "| 85.00 ± 1.41 / 81.00 ± 1.41 |" in grid_row(twin_point, 3, {})
    (tmp_path / twin_point / "seed1" / reproduce.LAYERS_FILE).write_text(json.dumps({"layers": []}))
    assert "| 87.00 ± 0.00 | - |" in grid_row(twin_point, 3, {})
    suffixes = {}
    for name in names:
        group = reproduce.EXPERIMENTS[name].group
        suffixes.setdefault(group, set()).add(name[len(group):])
    assert len(set(map(frozenset, suffixes.values()))) == 1 and len(suffixes) == 3


def test_the_moonshot_table_of_one_point_of_a_grid_counts_the_grid(tmp_path):
    """`reproduce --only` one point of a grid (its seeds given for it alone, as the command does): the table is
    written, and counts the grid's points finished, those not named included."""
    from vaelayer_np.tools.reproduce.report import moonshot_section

    point, other = "fashion-moon-iffcl-drop0.1", "fashion-moon-iffcl-aug"
    rows = [dict(epoch=e, train_acc=0.9, val_acc=0.8, test_acc=0.85, seconds=10.0) for e in range(1, 4)]
    for name in (point, other):
        (tmp_path / name / "seed0").mkdir(parents=True)
        (tmp_path / name / "seed0" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    grid = [n for n in reproduce.EXPERIMENTS if reproduce.EXPERIMENTS[n].group == "fashion-moon-iffcl"]
    lines = moonshot_section(tmp_path, [point], {point: [0, 1, 2]}, 3, {"fashion-moon-iffcl": point})
    row = next(line for line in lines if line.startswith("| fashion-moon-iffcl |"))
    assert f"| {point} (2 of {len(grid)} points finished so far) | 1/3 | 85.00 |" in row, row


def test_a_finished_run_leaves_its_test_predictions_and_gets_them_when_met_again(tmp_path, monkeypatch):
    """test_predictions.npz holds the run's probabilities on the test set (its prediction: the last metrics row's
    test accuracy) and the labels; a finished run without the file gets it when reproduce meets it again."""
    from vaelayer_np.run.checkpoint import load_npz

    one = reproduce.Experiment("fashion-local-heads", dict(dataset="digits", epochs=1, method="local-heads",
                                                           widths=(16, 12)), "local-heads", "fashion-local-heads")
    monkeypatch.setitem(reproduce.EXPERIMENTS, one.name, one)
    assert reproduce.run_one(one, 0, tmp_path, limit=300, log=lambda *a: None)
    run = tmp_path / one.name / "seed0"
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    saved = load_npz(run / "test_predictions.npz")
    assert saved["proba"].dtype == np.float64 and saved["proba"].shape == (len(saved["labels"]), 10)
    assert np.mean(saved["proba"].argmax(1) == saved["labels"]) == pytest.approx(last["test_acc"], abs=1e-12)
    (run / "test_predictions.npz").unlink()
    assert reproduce.run_one(one, 0, tmp_path, limit=300, log=lambda *a: None)  # finished before: reused
    again = load_npz(run / "test_predictions.npz")
    np.testing.assert_array_equal(again["labels"], saved["labels"])
    np.testing.assert_allclose(again["proba"], saved["proba"], rtol=0, atol=1e-12)


def test_two_runs_averaged_from_controlled_predictions(tmp_path):
    """The pair figure averages two runs' probabilities (not their votes): each pair of seeds with predictions on
    the same labels, and a run without them, with other labels or a corrupt file is left out."""
    from vaelayer_np.run.checkpoint import save_npz_atomic
    from vaelayer_np.tools.reproduce.report import two_runs_averaged

    name = "fashion-moon-backprop-drop0.1"
    labels = np.array([0, 1, 2, 3])
    # seed 0 is right on examples 0 and 1, barely wrong on 2 and 3; seed 1 is sure and right on 2, sure and
    # wrong on 3 and barely wrong on 0; seed 2 is right everywhere
    p0 = np.array([[.9, .1, 0, 0], [0, .9, .1, 0], [0, 0, .45, .55], [0, 0, .55, .45]])
    p1 = np.array([[.45, .55, 0, 0], [0, .9, .1, 0], [0, 0, .95, .05], [0, .95, 0, .05]])
    p2 = np.eye(4)
    for seed, proba in ((0, p0), (1, p1), (2, p2)):
        (tmp_path / name / f"seed{seed}").mkdir(parents=True)
        save_npz_atomic(tmp_path / name / f"seed{seed}" / "test_predictions.npz", {"proba": proba, "labels": labels})
    pairs, accuracies = two_runs_averaged(tmp_path, name, [0, 1, 2])
    # 0+1: example 0 right (.675 against .325: seed 0's confidence wins, where two votes would tie), 1 right,
    # 2 right (.7 against .3), 3 wrong (.475 for class 1 against .25); 0+2: all right (2: .725, 3: .725);
    # 1+2: all right (0: .725, 3: .525 against .475 for class 1)
    assert pairs == [(0, 1), (0, 2), (1, 2)] and accuracies == [0.75, 1.0, 1.0]
    save_npz_atomic(tmp_path / name / "seed2" / "test_predictions.npz", {"proba": p2, "labels": labels[::-1]})
    assert two_runs_averaged(tmp_path, name, [0, 1, 2]) == ([(0, 1)], [0.75])
    (tmp_path / name / "seed1" / "test_predictions.npz").write_bytes(b"not a zip file")
    assert two_runs_averaged(tmp_path, name, [0, 1, 2]) == ([], [])
    # the table: the chosen point as one network (its runs' mean) and as two runs averaged (the pairs' mean)
    from vaelayer_np.tools.reproduce.report import moonshot_section

    save_npz_atomic(tmp_path / name / "seed1" / "test_predictions.npz", {"proba": p1, "labels": labels})
    save_npz_atomic(tmp_path / name / "seed2" / "test_predictions.npz", {"proba": p2, "labels": labels})
    for seed, test in ((0, 0.5), (1, 0.75), (2, 1.0)):
        rows = [dict(epoch=e, train_acc=0.9, val_acc=0.8, test_acc=test, seconds=1.0) for e in range(1, 4)]
        (tmp_path / name / f"seed{seed}" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    names = [n for n in reproduce.EXPERIMENTS if n.startswith("fashion-moon-")]
    lines = moonshot_section(tmp_path, names, {n: [0, 1, 2] for n in names}, 3, {"fashion-moon-backprop": name})
    row = next(line for line in lines if line.startswith(f"| fashion-moon-backprop | {name} | 75.00"))
    assert row == (f"| fashion-moon-backprop | {name} | 75.00 ± 25.00 | 91.67 ± 14.43 | "
                   "two runs, seed pairs 0+1, 0+2, 1+2 |")


def test_the_attribution_runs_are_the_chosen_iffcl_point_without_its_own_terms(tmp_path):
    """fashion-iffcl-heads-60ep-nocos-nokl differs from the moonshot's IFFCL point in lambda and beta only (both 0),
    runs on every seed, and the report sets its twins beside the chosen point's when it is named."""
    from vaelayer_np.tools.reproduce.report import moonshot_section

    name = reproduce.MOONSHOT_ATTRIBUTION[0]
    point, attribution = (reproduce.EXPERIMENTS[n].settings for n in ("fashion-moon-iffcl-drop0.1", name))
    assert {k for k in point.keys() | attribution.keys() if point.get(k) != attribution.get(k)} == {"lam", "beta"}
    assert attribution["lam"] == 0 and attribution["beta"] == 0 and reproduce.EXPERIMENTS[name].group == name
    rows = [dict(epoch=e, train_acc=0.9, val_acc=0.8, test_acc=0.86, seconds=1.0) for e in range(1, 4)]
    for seed in (0, 1):
        run = tmp_path / name / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / reproduce.LAYERS_FILE).write_text(json.dumps({"layers": [], "twins": {"both": 0.86, "a": 0.84,
                                                                                      "b": 0.83 + seed / 100}}))
    moon = [n for n in reproduce.EXPERIMENTS if n.startswith("fashion-moon-iffcl")]
    seeds = {n: [0, 1] for n in [*moon, name]}
    assert not any(name in line for line in moonshot_section(tmp_path, moon, seeds, 3, {}))
    lines = moonshot_section(tmp_path, [*moon, name], seeds, 3, {})
    assert f"| IFFCL, lambda 0, beta 0 | {name} | 84.00 ± 0.00 / 83.50 ± 0.71 (twin A / B) | 86.00 ± 0.00 | " \
           "the twins of one run (seeds 0, 1) |" in lines
