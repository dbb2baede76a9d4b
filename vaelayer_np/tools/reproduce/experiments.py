"""The experiments of ``vaelayer reproduce``: the catalogue (name, settings, purpose, grid) and one run's
settings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...run.config import DEFAULTS, TrainConfig

# The paper's reading of IFFCL, for the decline study: one partner per example, the classifier on the
# last layer, the sample passed on, lambda 1, margin 0, a constant learning rate, no encoder hidden layer.
PAPER_LIKE = dict(contrast="partner", readout="last", pass_on="sample", lam=1.0, margin=0.0, output_lr=1e-3,
                  lr_schedule="constant", encoder_hidden=0)

# The Fashion-MNIST budget actually run here (both methods alike): 50 epochs x 3 seeds x the grids of
# both methods would take about 5 hours of wall time on the two cores, more than was available.
FASHION_EPOCHS = 10
DECLINE_EPOCHS = 5


LAYERS_FILE = "layers.json"
# a run's per-layer figures (written by the runner, read by the report)
PREDICTIONS_FILE = "test_predictions.npz"
# a finished run's class probabilities on the test set and the labels (written by the runner; the report averages
# two runs' probabilities with them)
PROBE_TRAIN = 10000  # training examples the per-layer linear probes are fitted on (the first of the training split)


@dataclass
class Experiment:
    """One experiment: a configuration (or a scikit-learn context model) run on every seed.

    Attributes
    ----------
    name : folder name under ``--out``
    settings : TrainConfig settings, or for ``kind != "train"`` the dataset and the model's settings
    purpose : one line for the table
    group : experiments of one group are the points of a grid; the best on validation is reported
    kind : "train" (a :func:`vaelayer_np.run.runs.train_run`), "logreg" or "mlp" (scikit-learn context rows)
    grid_seeds : "all" (every point on every seed) or "first" (the points on the first seed, the
        chosen point then on every seed); the group's reference point (``name == group``) always
        runs on every seed
    minutes : wall minutes per seed, measured on the two-core machine running two at a time (``--jobs 2``)
        with little other load, for --help; None when not measured
    """

    name: str
    settings: dict[str, Any]
    purpose: str
    group: str | None = None
    kind: str = "train"
    grid_seeds: str = "all"
    minutes: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return self.settings["dataset"]


def _mlp_sizes(dataset: str) -> tuple[int, ...]:
    """The hidden layers of an MLP the size of the default network: per VAE layer, encoder hidden then latent."""
    widths = TrainConfig(dataset=dataset).resolved_widths()
    sizes = []
    for w in widths:
        sizes += [DEFAULTS["encoder_hidden"], w]
    return tuple(sizes)


# The ablation's rows: (name, heads weight, lambda, beta, what). Every combination of heads {0, 3}, lambda {0, 10}
# and beta {0, 1e-3}; with backprop with and without the heads (fashion-backprop, fashion-backprop-heads).
ABLATION = (
    ("fashion-iffcl", 0.0, 10.0, 1e-3, "IFFCL, defaults"),
    ("fashion-iffcl-nocos", 0.0, 0.0, 1e-3, "IFFCL without the cosine term (lambda 0): VAE layers alone"),
    ("fashion-iffcl-nokl", 0.0, 10.0, 0.0, "IFFCL without the KL term (beta 0)"),
    ("fashion-iffcl-nocos-nokl", 0.0, 0.0, 0.0, "IFFCL, lambda 0 and beta 0: reconstruction alone"),
    ("fashion-iffcl-heads", 3.0, 10.0, 1e-3, "IFFCL + local classifier heads (weight 3)"),
    ("fashion-iffcl-heads-nocos", 3.0, 0.0, 1e-3, "IFFCL + local heads, no cosine term (lambda 0)"),
    ("fashion-iffcl-heads-nokl", 3.0, 10.0, 0.0, "IFFCL + local heads, no KL term (beta 0)"),
    ("fashion-iffcl-heads-nocos-nokl", 3.0, 0.0, 0.0, "IFFCL + local heads, lambda 0 and beta 0"),
)
# the baselines beside it: backprop without and with the same heads
ABLATION_PICTURED = ("fashion-iffcl", "fashion-iffcl-heads", "fashion-iffcl-heads-nocos-nokl", "fashion-backprop-heads")
ABLATION_BASELINES = ("fashion-backprop", "fashion-backprop-heads", "fashion-local-heads")


# The same on digits (the default 50 epochs): heads {0, 3} x lambda {0, 10} at beta 1e-3, and the baselines.
DIGITS_ABLATION = (
    ("digits-iffcl", 0.0, 10.0, 1e-3, "IFFCL, defaults"),
    ("digits-iffcl-nocos", 0.0, 0.0, 1e-3, "IFFCL without the cosine term (lambda 0)"),
    ("digits-iffcl-heads", 3.0, 10.0, 1e-3, "IFFCL + local heads (weight 3)"),
    ("digits-iffcl-heads-nocos", 3.0, 0.0, 1e-3, "IFFCL + local heads, lambda 0"),
)
DIGITS_ABLATION_BASELINES = ("digits-backprop", "digits-backprop-heads", "digits-local-heads")


def _digits_ablation() -> list[Experiment]:
    d = dict(dataset="digits")
    exps = [Experiment(name, dict(d, head_weight=heads, lam=lam, beta=beta), what, name, minutes=0.6)
            for name, heads, lam, beta, what in DIGITS_ABLATION if name != "digits-iffcl"]
    exps.append(Experiment("digits-backprop-heads", dict(d, method="backprop", head_weight=3.0),
                           "backprop + the same heads' losses (weight 3)", "digits-backprop-heads", minutes=0.4))
    exps.append(Experiment("digits-local-heads", dict(d, method="local-heads"),
                           "local-heads: plain dense layers, each trained by its own head", "digits-local-heads",
                           minutes=0.4))
    return exps


def _ablation(f: dict[str, Any]) -> list[Experiment]:
    """The ablation's rows not defined elsewhere in the catalogue, each its own reference point (no grid)."""
    defined = {"fashion-iffcl", "fashion-iffcl-heads", "fashion-iffcl-heads-nocos"}
    return [Experiment(name, dict(f, head_weight=heads, lam=lam, beta=beta), what, name)
            for name, heads, lam, beta, what in ABLATION if name not in defined]


# The moonshot: Fashion-MNIST past the best published local-learning result (91.5%, the target), with the recipe
# of that result's setting (data augmentation, dropout, a longer cosine schedule, wider layers) at a budget of
# MOONSHOT_EPOCHS epochs. Per method a grid of the points of MOONSHOT_GRID, each on the first seed; the point with the
# best validation accuracy then runs on every seed (the same grid and rule for the three methods). Augmentation:
# shifts of up to 2 pixels and horizontal flips with probability 1/2. The first two points were the grid as first
# planned (augmentation on both, dropout 0 or 0.1); the third (no augmentation, dropout 0.1) and the fourth (the
# anchor's width, 1024 units per layer, with augmentation and dropout 0.1) were added after the first method's
# two points were measured below the same method's 10-epoch figure without augmentation. The fifth (shifts of at most
# 1 pixel, no flips, dropout 0.1) was added when the four had shown the 256-unit networks fitting the 2-pixel-and-flip
# images too loosely (about 92% of the clean training images at the last epoch) and the unaugmented ones too closely
# (98.7%): it is the third point with the mildest of the augmentations added, one setting changed.
MOONSHOT_EPOCHS = 60
MOONSHOT_TARGET = 0.915  # mean last-epoch test accuracy over 3 seeds, of a local method
MOONSHOT_RECIPE = dict(augment_shift=2, augment_flip=0.5)
MOONSHOT_METHODS = (("iffcl", "IFFCL + local heads (weight 3)", dict(head_weight=3.0)),
                    ("backprop", "backprop + the same heads' losses (weight 3)", dict(method="backprop",
                                                                                      head_weight=3.0)),
                    ("local-heads", "local-heads (plain layers, each trained by its head)",
                     dict(method="local-heads")))


# (name suffix, settings, what) of every point of a moonshot grid
MOONSHOT_GRID = (("aug", dict(dropout=0.0, **MOONSHOT_RECIPE), "shifts 2 px + flips"),
                 ("aug-drop0.1", dict(dropout=0.1, **MOONSHOT_RECIPE), "shifts 2 px + flips, dropout 0.1"),
                 ("drop0.1", dict(dropout=0.1), "no augmentation, dropout 0.1"),
                 ("w1024-aug-drop0.1", dict(dropout=0.1, widths=(1024, 1024, 1024), **MOONSHOT_RECIPE),
                  "1024 units per layer, shifts 2 px + flips, dropout 0.1"),
                 ("shift1-drop0.1", dict(dropout=0.1, augment_shift=1, augment_flip=0.0),
                  "shifts 1 px (no flips), dropout 0.1"))


def _moonshot() -> list[Experiment]:
    f = dict(dataset="fashion-mnist", epochs=MOONSHOT_EPOCHS)
    exps = []
    for method, what, settings in MOONSHOT_METHODS:
        group = f"fashion-moon-{method}"
        for suffix, point, how in MOONSHOT_GRID:
            exps.append(Experiment(f"{group}-{suffix}", dict(f, **point, **settings),
                                   f"moonshot: {what}, {how}, {MOONSHOT_EPOCHS} epochs", group, grid_seeds="first"))
    return exps


# What IFFCL's own terms give at the moonshot's chosen IFFCL point (no augmentation, dropout 0.1, 60 epochs): the same
# runs without the cosine term and the KL term (lambda 0, beta 0), on every seed. Nothing is chosen on them; the
# report sets them beside the chosen point (one network and two averaged).
MOONSHOT_ATTRIBUTION = ("fashion-iffcl-heads-60ep-nocos-nokl",)


def _moonshot_attribution() -> list[Experiment]:
    f = dict(dataset="fashion-mnist", epochs=MOONSHOT_EPOCHS, head_weight=3.0, dropout=0.1)
    return [Experiment(MOONSHOT_ATTRIBUTION[0], dict(f, lam=0.0, beta=0.0),
                       f"IFFCL + local heads at the moonshot's chosen point (no augmentation, dropout 0.1, "
                       f"{MOONSHOT_EPOCHS} epochs), lambda 0 and beta 0", MOONSHOT_ATTRIBUTION[0])]


def _experiments() -> dict[str, Experiment]:
    f = dict(dataset="fashion-mnist", epochs=FASHION_EPOCHS)
    # in the order they are started: the main comparisons first, then the decline study and the context rows,
    # then the other grid points
    exps = [
        # Fashion-MNIST: the same budget and lr grid for both methods, every point on every seed
        Experiment("fashion-iffcl", dict(f), "IFFCL, defaults", "fashion-iffcl", minutes=10.5),
        Experiment("fashion-backprop", dict(f, method="backprop"), "backprop, defaults", "fashion-backprop",
                   minutes=6.0),
        Experiment("fashion-iffcl-lr2e-3", dict(f, lr=2e-3), "IFFCL, lr 2e-3", "fashion-iffcl",
                   minutes=9.0),
        Experiment("fashion-backprop-lr2e-3", dict(f, method="backprop", lr=2e-3), "backprop, lr 2e-3",
                   "fashion-backprop", minutes=4.8),
        Experiment("fashion-iffcl-lam30", dict(f, lam=30.0), "IFFCL, lambda 30 (cosine term weighted 3x)",
                   "fashion-iffcl", minutes=11.6),
        # local classifier heads: the same weight for both methods (a loss term IFFCL keeps local,
        # which backprop sends down through every layer). The weight 3 was chosen on validation in a
        # 3-epoch screen on 20,000 examples (weights 0.3, 1, 3, 10); see docs/results.md
        Experiment("fashion-iffcl-heads", dict(f, head_weight=3.0), "IFFCL + local classifier heads (weight 3)",
                   "fashion-iffcl-heads"),
        Experiment("fashion-backprop-heads", dict(f, method="backprop", head_weight=3.0),
                   "backprop + the same heads' losses (weight 3)", "fashion-backprop-heads"),
        Experiment("fashion-iffcl-heads-nocos", dict(f, head_weight=3.0, lam=0.0),
                   "IFFCL + local heads, no cosine term (lambda 0)", "fashion-iffcl-heads"),
        # the ablation: heads {0, 3} x lambda {0, 10} x beta {0, 1e-3}, all at lr 1e-3 (the default; no grid,
        # the same rule for every row); the rows of it defined above are fashion-iffcl (no heads, lambda 10,
        # beta 1e-3), fashion-iffcl-heads and fashion-iffcl-heads-nocos
        *_ablation(f),
        Experiment("fashion-local-heads", dict(f, method="local-heads"),
                   "local-heads: plain dense layers, each trained by its own head alone (no VAE, no twin)",
                   "fashion-local-heads"),
        Experiment("fashion-iffcl-heads-30ep", dict(f, head_weight=3.0, epochs=30),
                   "IFFCL + local heads (weight 3), 30 epochs", "fashion-iffcl-heads-30ep"),
        Experiment("fashion-backprop-heads-30ep", dict(f, method="backprop", head_weight=3.0, epochs=30),
                   "backprop + heads' losses (weight 3), 30 epochs", "fashion-backprop-heads-30ep"),
        *_moonshot(),
        *_moonshot_attribution(),
        # digits: both methods, the same lr grid, every point on every seed
        Experiment("digits-iffcl", dict(dataset="digits"), "IFFCL, defaults", "digits-iffcl", minutes=0.6),
        Experiment("digits-backprop", dict(dataset="digits", method="backprop"), "backprop, defaults",
                   "digits-backprop", minutes=0.3),
        *_digits_ablation(),
        Experiment("digits-logreg", dict(dataset="digits"), "context: logistic regression on pixels",
                   kind="logreg", minutes=0.1),
        Experiment("digits-mlp-sklearn", dict(dataset="digits", epochs=50),
                   f"context: scikit-learn MLP {_mlp_sizes('digits')}", kind="mlp", minutes=0.3),
        Experiment("fashion-iffcl-paper-like", dict(dataset="fashion-mnist", epochs=DECLINE_EPOCHS, **PAPER_LIKE),
                   "decline study: the paper's reading", minutes=2.3),
        Experiment("fashion-logreg", dict(dataset="fashion-mnist"), "context: logistic regression on pixels",
                   kind="logreg", minutes=1.0),
        Experiment("digits-iffcl-lr2e-3", dict(dataset="digits", lr=2e-3), "IFFCL, lr 2e-3", "digits-iffcl",
                   minutes=0.7),
        Experiment("digits-backprop-lr2e-3", dict(dataset="digits", method="backprop", lr=2e-3),
                   "backprop, lr 2e-3", "digits-backprop", minutes=0.4),
        # the most expensive context row last
        Experiment("fashion-mlp-sklearn", dict(dataset="fashion-mnist", epochs=FASHION_EPOCHS),
                   f"context: scikit-learn MLP {_mlp_sizes('fashion-mnist')}", kind="mlp", minutes=None),
    ]
    return {e.name: e for e in exps}


EXPERIMENTS = _experiments()


# ---------------------------------------------------------------------------------------- settings of one run
def run_settings(exp: Experiment, seed: int, epochs: int | None = None, limit: int | None = None) -> dict[str, Any]:
    """The settings of one seed of an experiment, with the command's overrides (``--epochs``, ``--limit``)."""
    s = dict(exp.settings, seed=int(seed))
    s.setdefault("threads", 1)  # one core per run: --jobs says how many run at a time
    if epochs is not None:
        s["epochs"] = int(epochs)
    if limit is not None:
        s["limit"] = int(limit)
    return s


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d.pop("backend", None)  # the machine's choice, not the experiment's
    d.pop("path", None)  # likewise: the readable and the fast path compute the same step
    d.pop("threads", None)  # likewise (IFFCL is the same bit for bit; backprop may differ in the last bits)
    return d

