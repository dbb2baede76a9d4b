"""How VAELayerClassifier compares with scikit-learn's models on small tables (a tool, not the library).

    nice -n 19 python -m vaelayer_np.tools.estimator_bench --benchmark

reports the test accuracy on scikit-learn's breast cancer, wine and iris tables, mean and std over
seeds, for the estimator (both methods) beside LogisticRegression and MLPClassifier
(docs/tabular.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..run.estimator import VAELayerClassifier


def benchmark(seeds: Sequence[int] = (0, 1, 2), epochs: int = 100, size_check_tables: Sequence[str] = ("wine",),
              log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """Test accuracy on scikit-learn's breast cancer, wine and iris tables, mean and std over seeds.

    For each table and seed: a seeded stratified 75/25 split, then VAELayerClassifier
    (iffcl and backprop, sizes fitted to the table; iffcl also with the digits model's
    sizes, widths (64, 64, 64) and encoder_hidden 1024, on the ``size_check_tables``
    only, as it costs about ten times more), LogisticRegression and
    MLPClassifier, each in a Pipeline after StandardScaler (the VAE classifier
    standardises itself). Returns a list of result dicts and prints a Markdown table.
    """
    from sklearn.datasets import load_breast_cancer, load_iris, load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tables = {"breast cancer": load_breast_cancer, "wine": load_wine, "iris": load_iris}
    models = {
        "VAELayerClassifier iffcl (fitted sizes)": lambda s: VAELayerClassifier(epochs=epochs, random_state=s),
        "VAELayerClassifier backprop (fitted sizes)": lambda s: VAELayerClassifier(method="backprop", epochs=epochs,
                                                                                   random_state=s),
        "VAELayerClassifier iffcl (digits sizes 64,64,64 / 1024)":
            lambda s: VAELayerClassifier(epochs=epochs, widths=(64, 64, 64), encoder_hidden=1024, random_state=s),
        "LogisticRegression": lambda s: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "MLPClassifier": lambda s: make_pipeline(StandardScaler(), MLPClassifier(max_iter=1000, random_state=s)),
    }
    results = []
    for table, loader in tables.items():
        X, y = loader(return_X_y=True)
        for model_name, make in models.items():
            if "digits sizes" in model_name and table not in size_check_tables:
                continue
            accs, seconds = [], []
            for s in seeds:
                x_tr, x_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=s, stratify=y)
                t0 = time.perf_counter()
                clf = make(s).fit(x_tr, y_tr)
                seconds.append(time.perf_counter() - t0)
                accs.append(clf.score(x_te, y_te))
            row = {"table": table, "rows": len(y), "features": X.shape[1], "classes": len(np.unique(y)),
                   "model": model_name, "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                   "fit_seconds": float(np.median(seconds)), "accs": accs}
            results.append(row)
            log(f"  {table:<14s} {model_name:<56s} {100 * row['mean']:6.2f} +- {100 * row['std']:5.2f} %  "
                f"(fit {row['fit_seconds']:.1f} s)")
    return results


def format_benchmark(results: list[dict[str, Any]], seeds: Sequence[int]) -> str:
    lines = [f"| table (rows, features, classes) | model | test accuracy (%), mean ± std over {len(seeds)} seeds "
             "| fit time (s, median) |", "|---|---|---:|---:|"]
    for r in results:
        lines.append(f"| {r['table']} ({r['rows']}, {r['features']}, {r['classes']}) | {r['model']} | "
                     f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f} | {r['fit_seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaelayer_np.tools.estimator_bench",
                                     description="VAELayerClassifier on scikit-learn's bundled tables.")
    parser.add_argument("--benchmark", action="store_true", help="run the comparison of docs/tabular.md")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args(argv)
    if not args.benchmark:
        parser.print_help()
        return 0
    seeds = tuple(range(args.seeds))
    t0 = time.perf_counter()
    results = benchmark(seeds, args.epochs)
    print()
    print(format_benchmark(results, seeds))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
