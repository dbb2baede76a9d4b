"""The results of ``vaelayer reproduce``: each experiment's statistics over its seeds (from the runs'
``metrics.jsonl``, nothing typed in), the choice of a grid's point on validation, and the results page
with its tables and figures."""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...run.config import TrainConfig
from .experiments import (
    ABLATION,
    ABLATION_BASELINES,
    ABLATION_PICTURED,
    DECLINE_EPOCHS,
    DIGITS_ABLATION,
    DIGITS_ABLATION_BASELINES,
    EXPERIMENTS,
    FASHION_EPOCHS,
    LAYERS_FILE,
    MOONSHOT_ATTRIBUTION,
    MOONSHOT_EPOCHS,
    MOONSHOT_GRID,
    MOONSHOT_METHODS,
    MOONSHOT_RECIPE,
    MOONSHOT_TARGET,
    PREDICTIONS_FILE,
    PROBE_TRAIN,
    Experiment,
)

Seeds = dict[str, list[int]] | Sequence[int]
"""The seeds of the experiments: one list for all, or per experiment name its list."""

INVOCATIONS_FILE = "invocations.jsonl"
GAP_TARGET = 0.005  # IFFCL within half a point of backprop


# ---------------------------------------------------------------------------------------- aggregation
def read_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run folder's ``metrics.jsonl`` (one per epoch); none when it has none."""
    from ...run.runs import read_metrics

    return read_metrics(run_dir)


def summarise_run(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One run's figures from its metrics rows; None when there are no rows.

    The epoch of best validation accuracy is chosen on the validation split only (the first one on a tie).
    """
    if not rows:
        return None
    best = max(rows, key=lambda r: -1.0 if r.get("val_acc") is None else r["val_acc"])
    last = rows[-1]
    return {"epochs": len(rows), "last_epoch": last["epoch"], "last_test": last["test_acc"],
            "last_val": last["val_acc"], "last_train": math.nan if last.get("train_acc") is None else last["train_acc"],
            "best_val": best["val_acc"], "test_at_best_val": best["test_acc"], "best_val_epoch": best["epoch"],
            "seconds": float(sum(r.get("seconds", 0.0) for r in rows))}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; nan for fewer than two values)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(out: str | Path, name: str, seeds: Iterable[int], expected_epochs: int | None) -> dict[str, Any]:
    """Figures of one experiment over its seeds.

    Returns a dict: ``per_seed`` {seed: summary}, ``missing`` [seeds without a finished run, each as
    ``(seed, reason)``], and for each figure a ``(mean, std)`` pair over the finished seeds.
    A seed whose run has fewer rows than ``expected_epochs`` is reported missing, never averaged in.
    """
    per_seed: dict[int, dict[str, Any]] = {}
    missing: list[tuple[int, str]] = []
    for seed in seeds:
        rows = read_rows(Path(out) / name / f"seed{seed}")
        s = summarise_run(rows)
        if s is None:
            missing.append((seed, "not run"))
        elif expected_epochs is not None and s["epochs"] < expected_epochs:
            missing.append((seed, f"unfinished ({s['epochs']}/{expected_epochs} epochs)"))
        else:
            per_seed[seed] = s
    result: dict[str, Any] = {"name": name, "per_seed": per_seed, "missing": missing, "n": len(per_seed)}
    for key in ("last_test", "test_at_best_val", "best_val", "last_val", "last_train", "seconds"):
        result[key] = mean_std([s[key] for s in per_seed.values()])
    return result


def _pct(pair: tuple[float, float]) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def _secs(pair: tuple[float, float]) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "-"
    return f"{mean:.0f}" + ("" if math.isnan(std) else f" ± {std:.0f}")


def _expected_epochs(exp: Experiment, epochs_override: int | None) -> int | None:
    if exp.kind == "logreg":
        return 1
    if epochs_override is not None:
        return int(epochs_override)
    if exp.kind == "mlp":
        return None  # scikit-learn reports one row whatever the number of iterations
    return TrainConfig(**{k: v for k, v in exp.settings.items() if k != "seed"}).epochs


# ---------------------------------------------------------------------------------------- plan
def _seed_list(exp: Experiment, seeds: Seeds) -> list[int]:
    return list(seeds[exp.name]) if isinstance(seeds, dict) else list(seeds)


def seeds_for(exp: Experiment, seeds: Seeds, chosen: Mapping[str, str]) -> list[int]:
    """The seeds an experiment runs on: all, or for a grid point other than the reference only the
    first seed unless it is its group's chosen point. ``seeds``: a list, or a dict experiment -> list."""
    seeds = _seed_list(exp, seeds)
    if exp.group is None or exp.grid_seeds == "all" or exp.name == exp.group or chosen.get(exp.group) == exp.name:
        return list(seeds)
    return list(seeds[:1])


def choose(out: str | Path, names: Iterable[str], seeds: Seeds, epochs_override: int | None) -> dict[str, str]:
    """For each group, the point with the best mean validation accuracy (at its best-validation epoch).

    The points are compared on the seeds every finished point of the group has, so a point run on
    three seeds is not compared with one run on one; groups without a finished point are absent.
    """
    finished: dict[str, list[tuple[str, dict[int, dict[str, Any]]]]] = {}
    for name in names:
        exp = EXPERIMENTS[name]
        if exp.group is None:
            continue
        agg = aggregate(out, name, _seed_list(exp, seeds), _expected_epochs(exp, epochs_override))
        if agg["n"]:
            finished.setdefault(exp.group, []).append((name, agg["per_seed"]))
    chosen: dict[str, str] = {}
    for group, points in finished.items():
        common = set.intersection(*(set(per_seed) for _, per_seed in points))
        best: float | None = None
        for name, per_seed in points:
            used = sorted(common) if common else sorted(per_seed)
            value = mean_std([per_seed[s]["best_val"] for s in used])[0]
            if best is None or value > best:
                chosen[group], best = name, value
    return chosen


# ---------------------------------------------------------------------------------------- the report
def _machine() -> str:
    model = platform.processor() or "unknown"
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{model}, {os.cpu_count()} cores"


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + (" (with uncommitted changes)" if dirty else "")


def _plot_mean_curves(out: str | Path, groups: Iterable[tuple[str, str]], seeds: Iterable[int], path: str | Path,
                      title: str) -> str | Path | None:
    """Mean test (solid) and train (dashed) accuracy per epoch over the finished seeds of each experiment."""
    from ...run.plots import plot_compare

    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for label, name in groups:
        per_seed = [read_rows(Path(out) / name / f"seed{s}") for s in seeds]
        per_seed = [r for r in per_seed if r]
        if not per_seed:
            continue
        n = min(len(r) for r in per_seed)
        rows = [{"epoch": per_seed[0][i]["epoch"],
                 "test_acc": sum(r[i]["test_acc"] for r in per_seed) / len(per_seed),
                 "train_acc": sum(r[i]["train_acc"] for r in per_seed) / len(per_seed)} for i in range(n)]
        runs.append((f"{label} ({len(per_seed)} seeds)", rows))
    if len(runs) < 1:
        return None
    return plot_compare(runs, path)


def _record_invocation(out: str | Path, command: str, start: float, end: float) -> None:
    with open(Path(out) / INVOCATIONS_FILE, "a") as fh:
        fh.write(json.dumps({"command": command, "start": start, "end": end}) + "\n")


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%H:%M")


def _training_span(out: str | Path, names: Iterable[str], seeds: Seeds, chosen: Mapping[str, str]
                   ) -> tuple[float, float] | None:
    """(first config.json time, last metrics.jsonl time) over the finished and unfinished runs, or None."""
    starts: list[float] = []
    ends: list[float] = []
    for name in names:
        for seed in seeds_for(EXPERIMENTS[name], seeds, chosen):
            folder = Path(out) / name / f"seed{seed}"
            for file, bucket in (("config.json", starts), ("context.json", starts), ("metrics.jsonl", ends)):
                if (folder / file).exists():
                    bucket.append((folder / file).stat().st_mtime)
    if not starts or not ends:
        return None
    return min(starts), max(ends)


def _seeds_by_dataset(names: Iterable[str], seeds: Seeds) -> dict[str, list[int]]:
    return {EXPERIMENTS[n].dataset: _seed_list(EXPERIMENTS[n], seeds) for n in names}


def build_report(out: str | Path, names: Sequence[str], seeds: Seeds, epochs_override: int | None,
                 chosen: Mapping[str, str], command: str, wall_seconds: float, limit: int | None = None,
                 lost: Mapping[tuple[str, int], str] | None = None) -> tuple[str, dict[str, dict[str, Any]]]:
    """The results page (markdown), computed from the run folders.

    ``lost``: {(name, seed): why} of the runs this invocation lost; each is named at the top of the page and
    in its row's missing seeds, with the command that resumes it."""
    out = Path(out)
    lost = dict(lost or {})
    lines = ["# Results", "",
             "Generated by `vaelayer reproduce` from the run folders' `metrics.jsonl` (nothing typed in).", "",
             f"* command: `{command}`",
             f"* date (UTC): {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M')}",
             f"* commit: {_commit()}",
             f"* machine: {_machine()}; runs in child processes with one BLAS thread each, several at a time on "
             "a machine shared with other work, so the seconds are not speed figures",
             "* seeds: " + "; ".join(f"{', '.join(map(str, v))} ({k})" for k, v in _seeds_by_dataset(
                 names, seeds).items())]
    if epochs_override is not None or limit is not None:
        lines.append(f"* overrides: epochs {epochs_override}, training examples limited to {limit} "
                     "(a smoke test, not the figures)")
    if lost:
        lines.append(f"* **NOT FINISHED: {len(lost)} run(s) lost by this invocation** (they did not come back "
                     "finished and were not asked to stop): " + "; ".join(
                         f"{n} seed {s} ({why})" for (n, s), why in sorted(lost.items()))
                     + f". Each resumes from the checkpoint in its folder: run `{command}` again")
    aggs: dict[str, dict[str, Any]] = {}
    total = 0.0
    for name in names:
        exp = EXPERIMENTS[name]
        aggs[name] = aggregate(out, name, seeds_for(exp, seeds, chosen), _expected_epochs(exp, epochs_override))
        total += sum(s["seconds"] for s in aggs[name]["per_seed"].values())
    lines.append(f"* compute: training time summed over every finished run {total / 60:.1f} min; "
                 f"wall time of this invocation {wall_seconds / 60:.1f} min")
    by_dataset = _seeds_by_dataset(names, seeds)
    flags = "".join(f" {flag} {','.join(map(str, by_dataset[key]))}" for key, flag in
                    (("fashion-mnist", "--seeds"), ("digits", "--digits-seeds")) if key in by_dataset)
    lines.append(f"* to run or finish every experiment (the same command resumes): `vaelayer reproduce --out {out}"
                 f"{flags} --jobs 2`")
    span = _training_span(out, names, seeds, chosen)
    if span is not None:
        first, last = span
        lines.append(f"* wall time from the first run's start to the last run's end (file times of the run folders): "
                     f"{(last - first) / 60:.0f} min, {_utc(first)} to {_utc(last)} UTC (the invocations, "
                     f"with their times, are appended to `{INVOCATIONS_FILE}`)")
    lines += ["", "Budgets: the same for both methods on a dataset. digits: the default 50 epochs. "
              f"Fashion-MNIST: **{FASHION_EPOCHS} epochs**, a reduced budget (not 50 epochs: on the two cores, "
              "running two at a time, three seeds of 50 epochs for both methods and their grids would take about 5 "
              "hours of wall time at the rates measured here, which did not fit in the time available; longer runs "
              f"may narrow or widen the gap); the decline study {DECLINE_EPOCHS} epochs. The learning-rate grid "
              "(lr 1e-3, the default, and 2e-3) is the same for both methods; every point runs on every seed, and "
              "the point with the best mean validation accuracy is the one compared.", ""]
    lines += ["Figures are mean ± standard deviation over the finished seeds (sample std). *last test* is the "
              "test accuracy after the last epoch; *test at best val* the test accuracy at the epoch of best "
              "validation accuracy (chosen on validation only); *best val* that validation accuracy, which "
              "also chooses each grid's point (marked **chosen**). Per-seed figures are in "
              "`OUT/<experiment>/seed<k>/metrics.jsonl`.", ""]
    header = ["| experiment | what | seeds | epochs | last test % | test % at best val | best val % | "
              "train seconds | missing seeds |", "|---|---|---|---|---|---|---|---|---|"]
    lines += header
    for name in names:
        exp, agg = EXPERIMENTS[name], aggs[name]
        mark = " **chosen**" if exp.group is not None and chosen.get(exp.group) == name else ""
        epochs = sorted({s["last_epoch"] for s in agg["per_seed"].values()})
        if exp.kind == "logreg" and epochs:
            epochs = ["fit"]
        missing = ", ".join(f"{s}: {'LOST, ' + lost[(name, s)] + ', ' if (name, s) in lost else ''}{why}"
                            for s, why in agg["missing"]) or "none"
        lines.append(f"| {name}{mark} | {exp.purpose} | {agg['n']}/{len(seeds_for(exp, seeds, chosen))} | "
                     f"{'/'.join(str(e) for e in epochs) or '-'} | {_pct(agg['last_test'])} | "
                     f"{_pct(agg['test_at_best_val'])} | {_pct(agg['best_val'])} | {_secs(agg['seconds'])} | "
                     f"{missing} |")
    lines.append("")
    lines += ablation_table(out, names, seeds, epochs_override, chosen)
    lines += moonshot_section(out, names, seeds, epochs_override, chosen)
    # the gap between the two methods, seed by seed (same seed: same split): the points chosen on validation,
    # and the two reference points when they differ from the chosen ones
    lines += ["## IFFCL minus backprop", ""]
    for dataset in ("digits", "fashion"):
        pairs = [(chosen.get(f"{dataset}-iffcl"), chosen.get(f"{dataset}-backprop"), "both chosen on validation")]
        if pairs[0][:2] != (f"{dataset}-iffcl", f"{dataset}-backprop"):
            pairs.append((f"{dataset}-iffcl", f"{dataset}-backprop", "the reference points (defaults)"))
        compared = []
        for a, b, how in pairs:
            if a not in aggs or b not in aggs:
                continue
            common = sorted(set(aggs[a]["per_seed"]) & set(aggs[b]["per_seed"]))
            if not common:
                continue
            compared.append((a, b, common))
            lines += [f"**{dataset}: IFFCL ({a}) minus backprop ({b}), {how}, over seeds "
                      f"{', '.join(map(str, common))} (mean ± std of the per-seed differences):**", ""]
            for key, label in (("last_test", "last-epoch test"), ("test_at_best_val", "test at best validation"),
                               ("best_val", "best validation")):
                diff = mean_std([aggs[a]["per_seed"][s][key] - aggs[b]["per_seed"][s][key] for s in common])
                lines.append(f"* {label}: {_pct(diff)} points")
                if key == "last_test":
                    reached = "yes" if diff[0] >= -GAP_TARGET else "no"
                    lines.append(f"* IFFCL within {100 * GAP_TARGET:.1f} points of backprop (last-epoch test, mean "
                                 f"over these seeds): {reached}")
            lines.append("")
        if compared:  # the figure: the pair with the most seeds
            a, b, common = max(compared, key=lambda c: len(c[2]))
            if _plot_mean_curves(out, [("IFFCL " + a, a), ("backprop " + b, b)], common,
                                 out / f"compare-{dataset}.png", dataset) is not None:
                lines += [f"![{dataset}: {a} and {b}, mean over seeds {', '.join(map(str, common))}]"
                          f"(figures/compare-{dataset}.png)", ""]
    if "fashion-iffcl-paper-like" in names and aggs["fashion-iffcl-paper-like"]["n"]:
        fig = _plot_mean_curves(out, [("paper's reading", "fashion-iffcl-paper-like"), ("defaults", "fashion-iffcl")],
                                _seed_list(EXPERIMENTS["fashion-iffcl-paper-like"], seeds),
                                out / "decline-study.png", "decline")
        if fig is not None:
            lines += ["![decline study: the paper's reading of IFFCL and the defaults on Fashion-MNIST, mean over "
                      "seeds](figures/decline-study.png)",
                      ""]
    return "\n".join(lines) + "\n", aggs


def _layer_stats(out: str | Path, name: str, seeds: Iterable[int]
                 ) -> tuple[dict[str, list[tuple[float, float]]], list[int]]:
    """Per layer, over the seeds whose run has ``layers.json``: {key: [(mean, std) per layer]}, and those seeds."""
    found: dict[int, list[dict[str, Any]]] = {}
    for seed in seeds:
        path = Path(out) / name / f"seed{seed}" / LAYERS_FILE
        if path.is_file():
            found[seed] = json.loads(path.read_text())["layers"]
    stats: dict[str, list[tuple[float, float]]] = {}
    for key in ("probe_test", "head_test", "recon", "kl"):
        per_layer = []
        for k in range(min((len(v) for v in found.values()), default=0)):
            values = [v[k][key] for v in found.values() if v[k][key] is not None]
            per_layer.append(mean_std(values) if values else (math.nan, math.nan))
        stats[key] = per_layer
    return stats, sorted(found)


def _per_layer(pairs: Sequence[tuple[float, float]], scale: float, digits: int) -> str:
    if not pairs or all(math.isnan(m) for m, _ in pairs):
        return "-"
    return " / ".join("-" if math.isnan(m) else f"{scale * m:.{digits}f}" + ("" if math.isnan(sd) else
                                                                              f" ± {scale * sd:.{digits}f}")
                      for m, sd in pairs)


def ablation_table(out: str | Path, names: Sequence[str], seeds: Seeds, epochs_override: int | None,
                   chosen: Mapping[str, str]) -> list[str]:
    """The ablation's table (the rows of :data:`ABLATION` and their baselines that are among ``names``)."""
    rows = [(n, f"{h:g}", f"{lam:g}", f"{b:g}") for n, h, lam, b, _ in ABLATION + DIGITS_ABLATION]
    rows += [(n, f"{EXPERIMENTS[n].settings.get('head_weight', 0.0):g}", "-", "-")
             for n in ABLATION_BASELINES + DIGITS_ABLATION_BASELINES if n in EXPERIMENTS]
    rows = [r for r in rows if r[0] in names]
    if not rows:
        return []
    lines = ["## Ablation: what each part contributes (Fashion-MNIST 10 epochs, digits 50; lr 1e-3 for every row)",
             "",
             "Every row at the default learning rates (1e-3 for the layers, 1e-2 for the classifiers) and the "
             "cosine schedule: no row gets a grid. Per layer (net A, evaluation path z = mu, layers 1 / 2 / 3): "
             f"*probe* the test accuracy of a logistic regression fitted on the layer's outputs for the first "
             f"{PROBE_TRAIN} training images (digits: all of them); *recon* the layer's reconstruction error of its "
             "input (mean squared error; layer 1 reconstructs pixels, deeper layers the outputs of the layer "
             "below) and *KL* its KL term (nats per image), both on the test set. A row with fewer seeds than "
             "asked is still running or not yet measured.", "",
             "| experiment | heads weight | lambda | beta | seeds | last test % | probe test % per layer | "
             "recon per layer | KL per layer | train seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, heads, lam, beta in rows:
        exp = EXPERIMENTS[name]
        wanted = seeds_for(exp, seeds, chosen)
        agg = aggregate(out, name, wanted, _expected_epochs(exp, epochs_override))
        stats, with_layers = _layer_stats(out, name, sorted(agg["per_seed"]))
        lines.append(f"| {name} | {heads} | {lam} | {beta} | {agg['n']}/{len(wanted)} | {_pct(agg['last_test'])} | "
                     f"{_per_layer(stats['probe_test'], 100, 1)} | {_per_layer(stats['recon'], 1, 3)} | "
                     f"{_per_layer(stats['kl'], 1, 0)} | {_secs(agg['seconds'])} |")
    lines.append("")
    # does a layer trained with heads remain a VAE? the first seed's reconstructions, with and without heads
    import shutil

    for name in ABLATION_PICTURED:
        first = _seed_list(EXPERIMENTS[name], seeds)[0] if name in names else None
        source = Path(out) / name / f"seed{first}" / "reconstructions.png"
        if first is not None and source.is_file():
            shutil.copyfile(source, Path(out) / f"recon-{name}.png")
            lines += [f"![{name}, seed {first}: test images and each layer's reconstruction carried down to pixels]"
                      f"(figures/recon-{name}.png)", ""]
    return lines


def _twins_alone(out: str | Path, name: str, seeds: Sequence[int]) -> str:
    """Twin A's and twin B's test accuracy alone (mean ± std over ``seeds``), from the runs' ``layers.json``;
    "-" when a run of them has none (a method of one network, or figures not yet written)."""
    per_twin: dict[str, list[float]] = {"a": [], "b": []}
    for seed in seeds:
        path = Path(out) / name / f"seed{seed}" / LAYERS_FILE
        twins = json.loads(path.read_text()).get("twins") if path.is_file() else None
        if not twins:
            return "-"
        for key in per_twin:
            per_twin[key].append(twins[key])
    if not seeds:
        return "-"
    return " / ".join(_pct(mean_std(values)) for values in per_twin.values())


def two_runs_averaged(out: str | Path, name: str, seeds: Sequence[int]) -> tuple[list[tuple[int, int]], list[float]]:
    """Every pair of ``seeds`` whose runs of ``name`` both left their test predictions (``test_predictions.npz``,
    on the same labels), and the test accuracy of each pair's probabilities averaged: two networks predicting
    together, the way IFFCL's twins do. Runs without predictions are left out, never guessed."""
    import numpy as np

    from ...run.checkpoint import CheckpointError, load_npz

    found: dict[int, tuple[Any, Any]] = {}
    for seed in seeds:
        path = Path(out) / name / f"seed{seed}" / PREDICTIONS_FILE
        try:
            arrays = load_npz(path) if path.is_file() else None
        except (CheckpointError, ValueError, OSError):
            arrays = None
        if arrays is not None and {"proba", "labels"} <= arrays.keys():
            proba, labels = arrays["proba"], arrays["labels"]
            if proba.ndim == 2 and labels.shape == proba.shape[:1]:
                found[seed] = (proba, labels)
    pairs, accuracies = [], []
    ordered = sorted(found)
    for i, first in enumerate(ordered):
        for second in ordered[i + 1:]:
            (p, y), (q, z) = found[first], found[second]
            if p.shape != q.shape or not np.array_equal(y, z):
                continue
            pairs.append((first, second))
            accuracies.append(float(np.mean((p + q).argmax(1) == y)))
    return pairs, accuracies


def _two_networks_table(out: str | Path, names: Sequence[str], groups: Sequence[str], seeds: Seeds,
                        epochs_override: int | None, chosen: Mapping[str, str]) -> list[str]:
    """Each group's chosen point as one network and as two networks averaged: IFFCL's twins of one run, or two
    runs of a one-network method with different seeds; then the attribution runs named (IFFCL's chosen point
    without its own terms), the same way."""
    lines = ["**One network, and two averaged.** IFFCL predicts with the average of its two twins' probabilities, "
             "an ensemble of two networks. To "
             "tell what local training gives from what averaging two networks gives, a method of one network "
             "gets the same average here: two of its runs at the chosen point, with different seeds, their test "
             "probabilities averaged, for every pair of finished seeds (the pairs share runs, so their spread "
             "understates the uncertainty). For IFFCL, *one network* is each twin alone (A / B) and *two "
             "averaged* is the run's own prediction. The last rows, when run, are IFFCL's chosen point without its "
             "own terms: the cosine term and the KL term off (lambda 0, beta 0), nothing else changed.", "",
             "| method | chosen point | one network, test % | two networks averaged, test % | the two networks |",
             "|---|---|---|---|---|"]
    rows = [(group, chosen[group]) for group in groups if group in chosen]
    rows += [("IFFCL, lambda 0, beta 0", n) for n in MOONSHOT_ATTRIBUTION if n in names]
    for group, name in rows:
        exp = EXPERIMENTS[name]
        agg = aggregate(out, name, seeds_for(exp, seeds, chosen), _expected_epochs(exp, epochs_override))
        finished = sorted(agg["per_seed"])
        if not finished:
            continue
        runs = ("seed " if len(finished) == 1 else "seeds ") + ", ".join(map(str, finished))
        if exp.settings.get("method", "iffcl") == "iffcl":
            lines.append(f"| {group} | {name} | {_twins_alone(out, name, finished)} (twin A / B) | "
                         f"{_pct(agg['last_test'])} | the twins of one run ({runs}) |")
            continue
        pairs, accuracies = two_runs_averaged(out, name, finished)
        which = ", ".join(f"{a}+{b}" for a, b in pairs)
        averaged = (_pct(mean_std(accuracies)), f"two runs, seed pairs {which}") if pairs else (
            "-", "needs two finished runs with their test predictions")
        lines.append(f"| {group} | {name} | {_pct(agg['last_test'])} | {averaged[0]} | {averaged[1]} |")
    lines.append("")
    return lines


def moonshot_section(out: str | Path, names: Sequence[str], seeds: Seeds, epochs_override: int | None,
                     chosen: Mapping[str, str]) -> list[str]:
    """Per moonshot group: the point chosen on validation, its last-epoch test accuracy over the seeds, and
    whether a local method's mean over 3 seeds reached :data:`MOONSHOT_TARGET`."""
    groups = [f"fashion-moon-{method}" for method, _, _ in MOONSHOT_METHODS]
    groups = [g for g in groups if any(EXPERIMENTS[n].group == g for n in names)]
    if not groups:
        return []
    lines = [f"## Moonshot: Fashion-MNIST at {100 * MOONSHOT_TARGET:.1f}% or more with a local method", "",
             f"The target is a mean last-epoch test accuracy of {100 * MOONSHOT_TARGET:.1f}% over 3 seeds. The "
             f"recipe: {MOONSHOT_EPOCHS} epochs (cosine schedule); per method a grid of {len(MOONSHOT_GRID)} points ("
             + "; ".join(how for _, _, how in MOONSHOT_GRID)
             + "; 256 units per layer unless said; shifts of up to "
             f"{MOONSHOT_RECIPE['augment_shift']} pixels, horizontal flips with probability "
             f"{MOONSHOT_RECIPE['augment_flip']}, dropout on every layer's input), each on the first seed; the point "
             "with the best validation accuracy then runs on every seed. Every point's figures are in the grid "
             "table below.", "",
             "| method | chosen on validation | seeds | last test % | best val % | train seconds | target reached |",
             "|---|---|---|---|---|---|---|"]
    for group in groups:
        name = chosen.get(group)
        if name is None:
            started = any((Path(out) / n).is_dir() for n in names if EXPERIMENTS[n].group == group)
            state = "started, no point finished yet" if started else "not run"
            lines.append(f"| {group} | {state} | 0 | - | - | - | - |")
            continue
        exp = EXPERIMENTS[name]
        wanted = seeds_for(exp, seeds, chosen)
        agg = aggregate(out, name, wanted, _expected_epochs(exp, epochs_override))
        local = exp.settings.get("method", "iffcl") != "backprop"
        if not local:
            reached = "(the baseline)"
        elif agg["n"] < 3:
            reached = "not yet measured (fewer than 3 seeds)"
        else:
            reached = "yes" if agg["last_test"][0] >= MOONSHOT_TARGET else "no"
        # every point of the grid, those this invocation did not name included (the seeds given for the chosen
        # point are the group's: a grid runs on one dataset)
        points = [n for n in EXPERIMENTS if EXPERIMENTS[n].group == group]
        first = _seed_list(exp, seeds)[:1]
        done = sum(aggregate(out, n, first, _expected_epochs(EXPERIMENTS[n], epochs_override))["n"] for n in points)
        if done < len(points):
            name += f" ({done} of {len(points)} points finished so far)"
        lines.append(f"| {group} | {name} | {agg['n']}/{len(wanted)} | {_pct(agg['last_test'])} | "
                     f"{_pct(agg['best_val'])} | {_secs(agg['seconds'])} | {reached} |")
    lines += ["", "The grid: every point on the first seed, and on every seed it has finished (a point chosen "
              "before the grid grew has more); the choice is made on *best val %* over the seeds all of a group's "
              "finished points share; *last test %* is shown, never used to choose; *last train %* is the "
              "accuracy on the training images as they are, without augmentation or dropout, at the last epoch: "
              "how closely the network fits them. IFFCL predicts with the average of its two twins' "
              "probabilities; *each twin alone* is the test accuracy of twin A and of twin B on their own at "
              "the last epoch (from the runs' `layers.json`; - for a method of one network), the part of the "
              "accuracy that is not the average of two networks.", "",
              "| point | seeds finished | last train % | last test % | each twin alone, test % (A / B) | "
              "best val % | train seconds |",
              "|---|---|---|---|---|---|---|"]
    for group in groups:
        for name in (n for n in EXPERIMENTS if EXPERIMENTS[n].group == group and n in names):
            exp = EXPERIMENTS[name]
            every = _seed_list(exp, seeds)
            expected = _expected_epochs(exp, epochs_override)
            agg = aggregate(out, name, every, expected)
            if agg["n"]:
                finished = sorted(agg["per_seed"])
                state = ("seed " if len(finished) == 1 else "seeds ") + ", ".join(map(str, finished))
            else:
                why = dict(agg["missing"])[every[0]]
                state = f"seed {every[0]}: {why}" if why != "not run" or (Path(out) / name).is_dir() else "not run"
            mark = " (chosen)" if chosen.get(group) == name else ""
            lines.append(f"| {name}{mark} | {state} | {_pct(agg['last_train'])} | {_pct(agg['last_test'])} | "
                         f"{_twins_alone(out, name, sorted(agg['per_seed']))} | {_pct(agg['best_val'])} | "
                         f"{_secs(agg['seconds'])} |")
    lines.append("")
    return lines + _two_networks_table(out, names, groups, seeds, epochs_override, chosen)


