"""Plots of a run folder (PNG files, matplotlib's non-interactive Agg backend).

* ``local_losses.png`` : each VAE layer's local loss and its terms over epochs, and
  the output layer's loss (the paper's figure)
* ``accuracy.png`` : train / validation / test accuracy over epochs
* ``reconstructions.png`` : test images and their reconstructions through each VAE layer
* ``samples.png`` : images decoded from samples of each layer's latent space
* ``compare.png`` (``plot_compare``) : test accuracy of several runs on one axis
* for a table (``image_shape`` None) instead of the two pixel plots:
  ``feature_errors.png`` (each layer's reconstruction error per feature) and
  ``latent_pca.png`` (each layer's latent means on their first two principal components)

:func:`plot_all` draws the first four; :func:`vaelayer_np.run.runs.plot_run` reads a run folder
and calls it. This module reads no files.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.generation import decode_to_input, sample_images, to_input_space

MAX_FIGURE_WIDTH = 16.0
"""Widest figure in inches (1760 pixels at the plots' 110 dpi), whatever the number of features."""
MAX_NAMED_FEATURES = 40
"""``feature_errors.png`` draws a bar and a name per feature up to this many features, lines beyond."""
MAX_LEGEND_ROWS = 15
"""Classes per legend column of ``latent_pca.png``; more classes make more columns, beside the panels."""
_MARKERS = "os^Dv<>P"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _n_layers(rows: list[dict[str, Any]]) -> int:
    return len({k.split("_")[0] for k in rows[0] if k.startswith("layer")}) if rows else 0


def plot_local_losses(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> str | Path:
    """One panel per VAE layer (its local loss and the terms that make it up) and one for the output loss.

    All terms of a panel are on one scale: for IFFCL each is the sum over the twins, and
    ``loss = recon + beta * kl + lambda * cos`` is the local loss the pair minimised.
    """
    plt = _plt()
    n = _n_layers(rows)
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, n + 1, figsize=(3.6 * (n + 1), 3.2), squeeze=False)
    for k in range(n):
        ax = axes[0, k]
        for term, style in (("loss", "-"), ("recon", "--"), ("kl", ":"), ("cos", "-.")):
            key = f"layer{k}_{term}"
            if key in rows[0]:
                ax.plot(epochs, [r[key] for r in rows], style, label=term)
        ax.set_title(f"VAE layer {k + 1}")
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax = axes[0, n]
    ax.plot(epochs, [r["output_loss"] for r in rows], "-", color="k")
    ax.set_title("output layer")
    ax.set_xlabel("epoch")
    fig.suptitle((title + "\n" if title else "") + "per layer: loss = recon + beta*kl (+ lambda*cos), summed over "
                 "the twins; kl not multiplied by beta", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> str | Path:
    plt = _plt()
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("train_acc", "train"), ("val_acc", "validation"), ("test_acc", "test")):
        if any(r.get(key) is None for r in rows):  # an empty split (e.g. --val-fraction 0)
            continue
        ax.plot(epochs, [100 * r[key] for r in rows], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare(runs: Sequence[tuple[str, list[dict[str, Any]]]], path: str | Path) -> str | Path:
    """runs: list of (label, rows). Test (solid) and train (dashed) accuracy of each."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, rows) in enumerate(runs):
        color = f"C{i}"
        epochs = [r["epoch"] for r in rows]
        marker = "o" if len(rows) < 20 else None  # a run of one epoch is a single point: draw it
        ax.plot(epochs, [100 * r["test_acc"] for r in rows], "-", marker=marker, ms=3, color=color,
                label=f"{label} test")
        ax.plot(epochs, [100 * r["train_acc"] for r in rows], "--", marker=marker, ms=3, color=color, alpha=0.6,
                label=f"{label} train")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _to_image(flat: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    img = flat.reshape(image_shape)
    if len(image_shape) == 3:  # CHW -> HWC
        img = np.transpose(img, (1, 2, 0))
    return np.clip(img, 0, 1)


def plot_reconstructions(net: Any, x: np.ndarray, image_shape: tuple[int, ...], path: str | Path,
                         n_images: int = 8) -> str | Path:
    """Row 0: inputs; row k+1: the reconstruction made by VAE layer k, decoded to pixels."""
    plt = _plt()
    x = x[:n_images]
    _, caches, _, _ = net.forward(x, sample=False)
    rows = [x] + [_reconstruction_to_pixels(net, k, cache["x_hat"]) for k, cache in enumerate(caches)]
    labels = ["input"] + [f"layer {k + 1}" for k in range(len(caches))]
    fig, axes = plt.subplots(len(rows), len(x), figsize=(1.1 * len(x), 1.1 * len(rows)), squeeze=False)
    for i, (row, label) in enumerate(zip(rows, labels)):
        for j in range(len(x)):
            ax = axes[i, j]
            ax.imshow(_to_image(row[j], image_shape), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(label, fontsize=7)
    fig.suptitle("reconstructions through each VAE layer (mean path)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _reconstruction_to_pixels(net: Any, k: int, x_hat: np.ndarray) -> np.ndarray:
    """Layer k's reconstruction of its own input, carried down to pixels (:mod:`vaelayer_np.analysis.generation`)."""
    if k > 0:
        return decode_to_input(net, k - 1, x_hat)
    return to_input_space(net, x_hat)


def plot_samples(net: Any, x: np.ndarray, image_shape: tuple[int, ...], path: str | Path, n_images: int = 8,
                 seed: int = 0) -> str | Path:
    """Row k: samples of layer k's aggregate posterior on ``x`` decoded to pixels
    (:func:`vaelayer_np.analysis.generation.sample_images`; with a small beta the N(0, I) prior
    is far from where the data lie)."""
    plt = _plt()
    n_layers = len(net.vae_layers)
    fig, axes = plt.subplots(n_layers, n_images, figsize=(1.1 * n_images, 1.1 * n_layers), squeeze=False)
    for k in range(n_layers):
        imgs = sample_images(net, k, n_images, source="aggregate", x=x, rng=seed + k)
        for j in range(n_images):
            ax = axes[k, j]
            ax.imshow(_to_image(imgs[j], image_shape), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[k, 0].set_ylabel(f"layer {k + 1}", fontsize=7)
    fig.suptitle("samples decoded from each layer's latent space", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _layer_reconstructions(net: Any, x: np.ndarray) -> tuple[list[np.ndarray], list[Any]]:
    """Each VAE layer's reconstruction of ``x`` carried down to the inputs (mean path): a list of (N, D)."""
    _, caches, _, _ = net.forward(x, sample=False)
    return [_reconstruction_to_pixels(net, k, cache["x_hat"]) for k, cache in enumerate(caches)], caches


def plot_feature_errors(net: Any, x: np.ndarray, path: str | Path, feature_names: Sequence[str] = (),
                        title: str = "") -> str | Path:
    """Mean squared reconstruction error of each input feature, one bar per VAE layer (mean path).

    For a table (standardised features): layer k's reconstruction is carried down to the
    inputs through the decoders of layers k-1, ..., 1 as in :func:`plot_reconstructions`,
    so an error of 1 is as large as the feature's spread.
    """
    plt = _plt()
    recons, _ = _layer_reconstructions(net, x)
    d = x.shape[1]
    names = list(feature_names) if len(feature_names) == d else [str(j) for j in range(d)]
    errors = [np.mean((r - x) ** 2, axis=0) for r in recons]
    fig, ax = plt.subplots(figsize=(min(MAX_FIGURE_WIDTH, max(5.0, 0.35 * d * len(errors) ** 0.5 + 2)), 3.6))
    if d <= MAX_NAMED_FEATURES:
        width = 0.8 / len(errors)
        for k, e in enumerate(errors):
            ax.bar(np.arange(d) + (k - (len(errors) - 1) / 2) * width, e, width, label=f"layer {k + 1}")
        ax.set_xticks(np.arange(d))
        ax.set_xticklabels(names, rotation=60 if d > 6 else 0, ha="right" if d > 6 else "center", fontsize=7)
    else:  # too many features for a bar and a name each: one line per layer over the column index
        for k, e in enumerate(errors):
            ax.plot(np.arange(d), e, lw=0.8, label=f"layer {k + 1}")
        ax.set_xlim(-0.5, d - 0.5)
        ax.set_xlabel(f"feature (column index, 0..{d - 1})", fontsize=8)
    ax.set_ylabel("mean squared error\n(standardised units)", fontsize=8)
    ax.legend(fontsize=7)
    ax.set_title(title or "reconstruction error per feature", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pca_2d(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of the rows of ``a`` (N, K) -> (N, 2), and their variance shares."""
    a = a - a.mean(axis=0)
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    comps = a @ vt[:2].T
    if comps.shape[1] < 2:
        comps = np.concatenate([comps, np.zeros((len(a), 2 - comps.shape[1]))], axis=1)
    var = s ** 2
    shares = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    return comps, np.pad(shares, (0, 2 - len(shares)))


def plot_latent_pca(net: Any, x: np.ndarray, path: str | Path, labels: np.ndarray | None = None,
                    class_names: Sequence[str] = (), title: str = "") -> str | Path:
    """One panel per VAE layer: its latent means of ``x`` projected on their first two principal components.

    Points are coloured by ``labels`` (the true classes) when given, else by the class the
    network predicts (said in the title).
    """
    plt = _plt()
    _, caches, _, _ = net.forward(x, sample=False)
    if labels is None:
        colour, what = net.predict_proba(x).argmax(axis=1), "predicted class"
    else:
        colour, what = np.asarray(labels), "class"
    n = len(caches)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.3), squeeze=False)
    n_classes = max(len(class_names), int(np.max(colour)) + 1 if len(colour) else 0)
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    for k, cache in enumerate(caches):
        comps, shares = _pca_2d(np.asarray(cache["mu"], dtype=np.float64))
        ax = axes[0, k]
        for c in np.unique(colour):
            m = colour == c
            name = class_names[c] if len(class_names) > c else str(c)
            # beyond the palette's colours a class differs from those of its colour by its marker
            ax.scatter(comps[m, 0], comps[m, 1], s=8, color=cmap(int(c) % cmap.N), label=name, alpha=0.8,
                       marker=_MARKERS[int(c) // cmap.N % len(_MARKERS)])
        ax.set_title(f"VAE layer {k + 1}", fontsize=9)
        ax.set_xlabel(f"PC 1 ({100 * shares[0]:.0f}% of variance)", fontsize=7)
        ax.set_ylabel(f"PC 2 ({100 * shares[1]:.0f}%)", fontsize=7)
    if n_classes <= 10:
        axes[0, -1].legend(fontsize=6, title=what, title_fontsize=6)
    else:  # a long legend goes beside the last panel, in columns, rather than over the points
        axes[0, -1].legend(fontsize=6, title=what, title_fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                           ncol=-(-n_classes // MAX_LEGEND_ROWS), markerscale=1.5, borderaxespad=0.0)
    fig.suptitle((title + "\n" if title else "") + f"latent means, first two principal components, coloured by {what}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_all(rows: list[dict[str, Any]], net: Any, x: np.ndarray, image_shape: tuple[int, ...] | None,
             out_dir: str | Path, title: str = "", labels: np.ndarray | None = None, class_names: Sequence[str] = (),
             feature_names: Sequence[str] = ()) -> list[str | Path]:
    """Write every plot of a run into ``out_dir``; returns the list of paths written.

    rows : the run's metrics (one dict per epoch); net : the network whose layers are drawn
    (net A of the twins); x : test inputs (N, D) for the reconstructions and the samples.
    image_shape : the images' shape, or None for a table: then no pixel grids are drawn
    (standardised features are no picture) but ``feature_errors.png`` (reconstruction
    error per feature and layer) and ``latent_pca.png`` (a 2-D view of each layer's latent
    means, coloured by ``labels`` (N,) when given, else by the predicted class).
    class_names, feature_names : names for the legends and axes of the table plots.
    """
    out_dir = Path(out_dir)
    written = [plot_local_losses(rows, out_dir / "local_losses.png", f"local losses per layer: {title}"),
               plot_accuracy(rows, out_dir / "accuracy.png", f"accuracy: {title}")]
    if not net.vae_layers:  # a network without VAE layers (method local-heads): nothing to reconstruct or sample
        return written
    if image_shape is None:
        written.append(plot_feature_errors(net, x, out_dir / "feature_errors.png", feature_names,
                                           f"reconstruction error per feature (test rows): {title}"))
        written.append(plot_latent_pca(net, x, out_dir / "latent_pca.png", labels, class_names, title))
        return written
    written.append(plot_reconstructions(net, x, image_shape, out_dir / "reconstructions.png"))
    written.append(plot_samples(net, x, image_shape, out_dir / "samples.png"))
    return written
