"""``vaelayer reproduce``: the benchmark runs behind docs/results.md, and their table.

Each experiment is an ordinary run folder under ``--out``; the table
(``results.md``) is computed from their ``metrics.jsonl`` files, nothing typed in.
"""
from __future__ import annotations

from pathlib import Path

from .config import TrainConfig
from .runs import read_metrics, train_run

# The paper's reading of IFFCL, for the decline study: one partner per example, the classifier on the
# last layer, the sample passed on, lambda 1, a constant learning rate, no encoder hidden layer.
PAPER_LIKE = dict(contrast="pairs", readout="last", pass_on="sample", lam=1.0, margin=0.0, output_lr=1e-3,
                  lr_schedule="constant", encoder_hidden=0)

EXPERIMENTS = {
    # name: (settings, what the experiment is for)
    "digits-iffcl": (dict(dataset="digits"), "test >= 97%"),
    "digits-backprop": (dict(dataset="digits", method="backprop"), "reference"),
    "fashion-iffcl": (dict(dataset="fashion-mnist", epochs=50), "test >= 88%; last within 0.5 of best"),
    "fashion-backprop": (dict(dataset="fashion-mnist", method="backprop", epochs=20), "reference (about 89%)"),
    "fashion-iffcl-constant-lr": (dict(dataset="fashion-mnist", epochs=50, lr_schedule="constant"),
                                  "decline study: our recipe without the lr decay"),
    "fashion-iffcl-paper-like": (dict(dataset="fashion-mnist", epochs=50, **PAPER_LIKE),
                                 "decline study: the paper's reading"),
}


def summarise(name, rows, target):
    best = max(rows, key=lambda r: r["val_acc"])  # chosen on validation, reported on test
    best_test = max(r["test_acc"] for r in rows)
    last = rows[-1]
    return (f"| {name} | {len(rows)} | {100 * last['test_acc']:.2f} | {100 * best_test:.2f} | "
            f"{100 * best['test_acc']:.2f} (epoch {best['epoch']}) | {100 * (best_test - last['test_acc']):.2f} | "
            f"{sum(r['seconds'] for r in rows):.0f} | {target} |")


def run_reproduce(out, only=None, quick=False, log=print):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(EXPERIMENTS) if only is None else [n.strip() for n in only.split(",")]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"--only: unknown experiments {unknown}; expected names from {list(EXPERIMENTS)}")
    lines = ["| experiment | epochs | last test % | best test % | test % at best validation | best - last | "
             "train seconds | target |", "|---|---|---|---|---|---|---|---|"]
    for name in names:
        settings, target = EXPERIMENTS[name]
        settings = dict(settings)
        if quick:
            settings.update(epochs=2, limit=2000 if settings["dataset"] != "digits" else None)
        run_dir = out / name
        if (run_dir / "checkpoint.npz").exists():
            log(f"{name}: continuing or reusing {run_dir}")
            _, rows, _ = train_run(resume=run_dir, progress=False, log=log)
        else:
            _, rows, _ = train_run(TrainConfig(**settings), run_dir=run_dir, progress=False, log=log)
        rows = read_metrics(run_dir)
        lines.append(summarise(name, rows, target))
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    log(table)
    pairs = [(n, n.replace("iffcl", "backprop")) for n in names if n.endswith("iffcl")]
    from .plots import plot_compare
    for a, b in pairs:
        if (out / a / "metrics.jsonl").exists() and (out / b / "metrics.jsonl").exists():
            plot_compare([(a, read_metrics(out / a)), (b, read_metrics(out / b))], out / f"compare-{a}.png")
    study = [n for n in ("fashion-iffcl", "fashion-iffcl-constant-lr", "fashion-iffcl-paper-like")
             if (out / n / "metrics.jsonl").exists()]
    if len(study) > 1:
        plot_compare([(n, read_metrics(out / n)) for n in study], out / "decline-study.png")
    return table
