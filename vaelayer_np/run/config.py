"""The settings of one training run: :class:`TrainConfig`, its defaults and its checks.

The model's and the methods' defaults come from :mod:`vaelayer_np.core.settings` (the one
source the layers and the steps read); this module adds the run's own settings (data,
schedule, training path, threads). The command line's options are generated from
:class:`TrainConfig`.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from ..core._validate import check_choice, check_dtype, check_int, check_number, check_path
from ..core.activations import ACTIVATIONS
from ..core.settings import CHOICES as MODEL_CHOICES
from ..core.settings import DEFAULTS, RENAMED, canonical
from ..fast.backend import PATH_OF_OLD_BACKEND, PATHS, default_path, path_of_old_backend
from ..fast.machine import check_threads
from .data import DATASETS

# The allowed values of every setting that is a choice: the model's and the methods' (core.settings)
# and the run's.
CHOICES = {
    "dataset": DATASETS,
    "method": ("iffcl", "backprop", "local-heads"),
    **MODEL_CHOICES,
    "predict": ("twins", "twin_a"),
    "optimizer": ("adam", "sgd"),
    "lr_schedule": ("constant", "cosine"),
    "path": PATHS,
    "dtype": ("float32", "float64"),
    "parallel": ("twins", "layers"),
}

DEFAULT_EPOCHS = {"digits": 50}
DEFAULT_BATCH = {"digits": 32}
DEFAULT_WIDTHS = {"digits": (64, 64, 64), "fashion-mnist": (256, 256, 256), "mnist": (256, 256, 256),
                  "cifar10": (256, 256, 256)}
# The pixel grid of each image dataset (what augmentation shifts and flips); a table has none.
IMAGE_SHAPES = {"digits": (8, 8), "fashion-mnist": (28, 28), "mnist": (28, 28), "cifar10": (3, 32, 32)}
DEFAULT_THREADS = "auto"
"""Threads while training and predicting, unless told otherwise (``threads``, ``--threads N``).

``"auto"``: the cores idle when the run starts (:func:`vaelayer_np.fast.machine.auto_threads`; 1 when
the other cores are busy). With 2 or more, IFFCL runs its twins in parallel, one BLAS thread each
(:mod:`vaelayer_np.fast.parallel`), or with ``parallel="layers"`` its layers pipelined
(:mod:`vaelayer_np.fast.pipeline`, in ``Trainer.train_epoch``); a step under
:data:`vaelayer_np.fast.machine.PARALLEL_MIN_FLOPS` runs serially; every IFFCL product runs on one BLAS thread
(``Trainer.blas_threads``), so an IFFCL run gives the same bits with any count on one machine. The backprop
baseline gets that many BLAS threads (docs/performance.md, "Threads").
"""
ARRAYS = "arrays"
"""The ``dataset`` of a configuration trained on arrays in memory (the scikit-learn estimator): its widths are given."""
TABLE_SUFFIXES = (".csv", ".npz")


# Settings that may differ between a checkpoint and the configuration that resumes it:
# the length of the run, where the data files are (the same data), the training path
# (readable or fast: the same mathematics, rounding-level differences) and the number of threads. Every
# other setting defines the model or the training, and a resume must keep it.
RESUME_MAY_CHANGE = frozenset({"epochs", "data_dir", "path", "threads", "parallel"})


@dataclass
class TrainConfig:
    """Settings of one training run. ``help`` metadata becomes the CLI's option help."""

    dataset: str = field(default="digits", metadata={"help": "dataset: " + ", ".join(DATASETS)})
    data_dir: str | None = field(default=None, metadata={"help": "folder with the dataset files"})
    val_fraction: float = field(default=0.1, metadata={"help": "part of the training set held out for validation"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N training examples (quick "
                                                      "runs); every class must keep one"})
    data: str = field(default="", metadata={"help": "your own table instead of --dataset: FILE.csv (a header row; "
                                                    "one column holds the labels) or FILE.npz (arrays X and y); "
                                                    "--dataset then becomes the file's name"})
    target: str = field(default="", metadata={"help": "with a CSV --data: the column holding the labels "
                                                      "(default: the last column)"})
    test_data: str = field(default="", metadata={"help": "with --data: a test file with the same columns (default: "
                                                         "a seeded stratified --test-fraction of --data)"})
    test_fraction: float = field(default=0.2, metadata={"help": "with --data and no --test-data: the part of the "
                                                                "rows held out for testing"})
    method: str = field(default="iffcl", metadata={"help": "iffcl (local losses), backprop (baseline), or "
                                                         "local-heads (plain dense layers of the same sizes, each "
                                                         "trained by its own classifier head alone: no VAE, no "
                                                         "twin, no gradient between layers)"})
    widths: tuple[int, ...] | None = field(default=None,
                                           metadata={"help": "latent sizes of the VAE layers, e.g. 256,256,256 "
                                                             "(default: 64,64,64 on digits, fitted to a --data "
                                                             "table, 256,256,256 otherwise)"})
    activation: str = field(default=DEFAULTS["activation"],
                            metadata={"help": "VAE layer output activation: " + ", ".join(ACTIVATIONS)})
    beta: float = field(default=DEFAULTS["beta"], metadata={"help": "weight of each layer's KL term"})
    beta_warmup_epochs: int = field(default=0, metadata={"help": "ramp beta linearly from 0 over this many epochs"})
    recon: str = field(default=DEFAULTS["recon"], metadata={"help": "first layer's reconstruction loss: mse or bce"})
    encoder_hidden: int = field(default=DEFAULTS["encoder_hidden"],
                                metadata={"help": "width of a hidden layer inside each VAE layer's encoder "
                                                  "(0: a linear encoder, mu = x @ W_mu + b_mu; with the default "
                                                  "value, a --data table gets a width fitted to it)"})
    log_var_bound: float = field(default=DEFAULTS["log_var_bound"],
                                 metadata={"help": "c in log_var = c*tanh(r/c) (0: unbounded)"})
    log_var_bias_init: float = field(default=DEFAULTS["log_var_bias_init"],
                                     metadata={"help": "initial bias of the log-variance head"})
    pass_on: str = field(default=DEFAULTS["pass_on"],
                         metadata={"help": "what the next layer receives in training: sample (act(z)) or mean "
                                           "(act(mu)); evaluation always uses the mean"})
    pairing: str = field(default=DEFAULTS["pairing"],
                         metadata={"help": "what twin B sees beside each example: a random partner (random), a "
                                           "partner of the same class half of the time (balanced), or the example "
                                           "itself (mirror)"})
    contrast: str = field(default=DEFAULTS["contrast"],
                          metadata={"help": "cosine term over each example and its partner (partner) or over all "
                                            "pairs of the batch, targets from the labels (all_pairs)"})
    cosine_on: str = field(default=DEFAULTS["cosine_on"],
                           metadata={"help": "cosine term on the latent z (latent) or on the layer's output, act(mu) "
                                             "or act(z) as pass_on says (output)"})
    lam: float = field(default=DEFAULTS["lam"], metadata={"help": "lambda, weight of the cosine term"})
    margin: float = field(default=DEFAULTS["margin"], metadata={"help": "cosine embedding margin for target -1"})
    head_weight: float = field(default=DEFAULTS["head_weight"],
                               metadata={"help": "weight of a local classifier head on each VAE layer's output in "
                                                 "that layer's local loss (0: no heads; with backprop the heads' "
                                                 "losses are added to the loss)"})
    readout: str = field(default=DEFAULTS["readout"],
                         metadata={"help": "output layer reads the last VAE layer (last) or all (all)"})
    output_loss: str = field(default=DEFAULTS["output_loss"],
                             metadata={"help": "softmax (cross-entropy) or bce (one-hot)"})
    predict: str = field(default="twins",
                         metadata={"help": "average both twins' probabilities (twins) or net A's alone (twin_a)"})
    backprop_neg_elbo_weight: float = field(default=DEFAULTS["backprop_neg_elbo_weight"],
                                            metadata={"help": "backprop baseline: weight of the layers' negative "
                                                              "ELBOs added to the classification loss"})
    dropout: float = field(default=0.0, metadata={"help": "in training, zero each input of every layer with this "
                                                         "probability (inverted dropout; 0: off); IFFCL then "
                                                         "runs its step serially"})
    augment_shift: int = field(default=0, metadata={"help": "image datasets: shift each training image by up to "
                                                           "this many pixels in each direction, drawn anew for "
                                                           "every batch (0: off)"})
    augment_flip: float = field(default=0.0, metadata={"help": "image datasets: flip each training image "
                                                              "horizontally with this probability (0: off)"})
    optimizer: str = field(default="adam", metadata={"help": "adam or sgd"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate of the VAE layers"})
    output_lr: float = field(default=0.01, metadata={"help": "learning rate of the output layer"})
    lr_schedule: str = field(default="cosine", metadata={"help": "constant, or cosine (decay to 0 over the run)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 weight decay on weight matrices"})
    epochs: int | None = field(default=None, metadata={"help": "training epochs (default: 50 on digits, 100 on a "
                                                               "--data table, 20 otherwise)"})
    batch_size: int | None = field(default=None, metadata={"help": "mini-batch size (default: 32 on digits and on "
                                                                   "a --data table, 128 otherwise; beyond the training "
                                                                   "rows: one batch of every row)"})
    seed: int = field(default=0, metadata={"help": "seed for initialisation, pairing, noise and batch order"})
    path: str | None = field(default=None, metadata={"help": "the training path: fast (reused buffers and compiled "
                                                             "Numba kernels; the default, measured faster) or "
                                                             "readable (the layers' own NumPy forward and backward, "
                                                             "the reference; the default when NUMBA_DISABLE_JIT=1): "
                                                             "the same steps up to rounding, not the same "
                                                             "bits"})
    backend: str | None = field(default=None, metadata={"help": "deprecated, the old spelling of --path: numba is "
                                                                "--path fast, numpy is --path readable"})
    dtype: str = field(default="float32", metadata={"help": "float32 or float64"})
    threads: int | str = field(default=DEFAULT_THREADS, metadata={"help": "threads while training: a number, or auto "
                                                                   "(the cores idle at the start; IFFCL runs its "
                                                                   "twins in parallel with 2: docs/performance.md)"})
    parallel: str = field(default="twins", metadata={"help": "how IFFCL uses 2 or more threads: twins (twin A "
                                                             "and twin B on two threads, meeting at each layer's "
                                                             "cosine term) or layers (the layers pipelined: "
                                                             "stages of consecutive layers, one thread each, "
                                                             "stage s training on the batch before stage s-1's); "
                                                             "both give the serial training bit for bit: every IFFCL "
                                                             "product runs on one BLAS thread"})

    def resolved_widths(self) -> tuple[int, ...]:
        if self.widths:
            return tuple(self.widths)
        if self.dataset not in DEFAULT_WIDTHS:
            raise ValueError(f"widths: not given for {self.dataset!r}; a table's widths are fitted when it is loaded "
                             "(vaelayer_np.run.tables.fit_sizes), arrays need them given")
        return DEFAULT_WIDTHS[self.dataset]

    def is_table(self) -> bool:
        """True when the run trains on a table file (``data``) rather than a named dataset."""
        return bool(self.data)

    def __post_init__(self) -> None:
        # a file or folder given as a path object (pathlib.Path) is stored as text, like one given as text;
        # anything else that is not a path (a number, bytes, blank text) is an error naming the setting
        for name in ("data", "test_data", "data_dir"):
            if getattr(self, name) not in (None, ""):
                setattr(self, name, os.fspath(check_path(name, getattr(self, name))))
        # old spellings of choices (vaelayer_np.core.settings.RENAMED) are stored in their new spelling
        for name in RENAMED:
            setattr(self, name, canonical(name, getattr(self, name)))
        # dataset-dependent defaults are filled in once, so the saved config is explicit
        if self.data and isinstance(self.data, str):
            # a table: runs and plots carry the file's name; sizes are fitted to it when it is loaded
            from .tables import TABLE_BATCH, TABLE_EPOCHS, table_name
            if self.dataset == "digits":
                self.dataset = table_name(self.data)
            # absolute, so `vaelayer evaluate RUN` and `plot RUN` find the file from any folder
            self.data = os.path.abspath(self.data)
            if self.test_data and isinstance(self.test_data, str):
                self.test_data = os.path.abspath(self.test_data)
            if self.epochs is None:
                self.epochs = TABLE_EPOCHS
            if self.batch_size is None:
                self.batch_size = TABLE_BATCH
        if self.data_dir and isinstance(self.data_dir, str):
            # absolute like a table's path: `vaelayer evaluate RUN` and `plot RUN` find the files from any folder
            self.data_dir = os.path.abspath(self.data_dir)
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS.get(self.dataset, 20)
        if self.batch_size is None:
            self.batch_size = DEFAULT_BATCH.get(self.dataset, 128)
        if self.backend is not None:  # the old spelling of the training path (with a DeprecationWarning)
            old = path_of_old_backend(self.backend, "TrainConfig", stacklevel=4)  # the caller of TrainConfig(...)
            if self.path is not None and self.path != old:
                raise ValueError(f"backend: {self.backend!r} (the old spelling of path={old!r}) contradicts "
                                 f"path={self.path!r}; give path alone")
            self.path, self.backend = old, None
        if self.path is None:
            self.path = default_path()

    def validate(self) -> TrainConfig:
        if not (isinstance(self.dtype, str) and self.dtype in CHOICES["dtype"]):  # np.float32, "f4", ...: by name
            self.dtype = check_dtype(self.dtype).name
        for name, choices in CHOICES.items():
            if name == "dataset" and (self.data or self.dataset == ARRAYS):
                continue
            check_choice(name, getattr(self, name), choices)
        self._validate_table()
        if isinstance(self.threads, str) and self.threads.isdigit():  # --threads 2 arrives as a string
            self.threads = int(self.threads)
        if not (isinstance(self.threads, str) and self.threads == "auto"):
            if self.threads is None:
                raise ValueError(f"threads: expected a positive integer or 'auto', got {self.threads!r}")
            checked = check_threads(self.threads)
            assert checked is not None  # None was refused above
            self.threads = checked
        # every number through core._validate (bool, str, NaN, inf refused; numpy scalars taken as numbers),
        # and stored back as a Python number (a run's settings are written as JSON)
        for name in ("beta", "lam", "weight_decay", "backprop_neg_elbo_weight", "log_var_bound", "head_weight"):
            setattr(self, name, check_number(name, getattr(self, name), minimum=0.0))
        self.lr = check_number("lr", self.lr, above=0.0)
        self._validate_regularisers()
        if self.output_lr is not None:
            self.output_lr = check_number("output_lr", self.output_lr, above=0.0)
        self.log_var_bias_init = check_number("log_var_bias_init", self.log_var_bias_init)
        self.val_fraction = check_number("val_fraction", self.val_fraction, minimum=0.0, maximum=0.5)
        self.margin = check_number("margin", self.margin, minimum=-1.0, maximum=1.0)
        from .tables import SEED_LIMIT  # NumPy's and scikit-learn's generators take seeds in 0..2**32-1

        self.seed = check_int("seed", self.seed, minimum=0, maximum=SEED_LIMIT - 1)
        self.encoder_hidden = check_int("encoder_hidden", self.encoder_hidden, minimum=0)
        self.beta_warmup_epochs = check_int("beta_warmup_epochs", self.beta_warmup_epochs, minimum=0)
        if self.limit is not None:
            self.limit = check_int("limit", self.limit, minimum=1)
        for name in ("epochs", "batch_size"):
            setattr(self, name, check_int(name, getattr(self, name), minimum=1))
        if self.widths is not None:
            if isinstance(self.widths, (str, bytes)) or not isinstance(self.widths, (tuple, list)) or not self.widths:
                raise ValueError(f"widths: expected positive integers, got {self.widths!r}")
            try:
                self.widths = type(self.widths)(check_int("widths", w, minimum=1) for w in self.widths)
            except ValueError:
                raise ValueError(f"widths: expected positive integers, got {self.widths!r}") from None
        return self

    def _validate_regularisers(self) -> None:
        """dropout, augmentation, and the local-heads method's own loss."""
        for name in ("dropout", "augment_flip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0 \
                    or (name == "augment_flip" and value > 0.5):
                bound = "[0, 0.5]" if name == "augment_flip" else "[0, 1)"
                raise ValueError(f"{name}: expected a probability in {bound}, got {value!r}")
        shift = self.augment_shift
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise ValueError(f"augment_shift: expected an integer >= 0 (pixels), got {shift!r}")
        if (shift or self.augment_flip) and (self.data or self.dataset not in IMAGE_SHAPES):
            raise ValueError(f"augment_shift, augment_flip: apply to image datasets ({', '.join(IMAGE_SHAPES)}), "
                             f"not to {self.dataset!r}")
        if shift and shift >= min(IMAGE_SHAPES[self.dataset][-2:]):
            raise ValueError(f"augment_shift: {shift} pixels would shift a {self.dataset} image out of its "
                             f"{IMAGE_SHAPES[self.dataset][-2:]} grid")
        if self.method == "local-heads" and self.head_weight:
            raise ValueError("head_weight: the local-heads method's local loss is each layer's head alone; leave "
                             "head_weight at 0")

    def _validate_table(self) -> None:
        for name in ("data", "target", "test_data"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: expected a file or column name (text), got {getattr(self, name)!r}")
        if self.data_dir is not None and (self.data or self.dataset == "digits"):
            # a folder that is never read: most likely a --dataset left out (digits is the default)
            reads = "a --data table is read from its own path" if self.data else \
                "digits ships with scikit-learn and reads no files"
            raise ValueError(f"data_dir: applies only to the datasets read from files (fashion-mnist, mnist, "
                             f"cifar10); {reads}: give --dataset with --data-dir, or leave --data-dir out")
        if not self.data:
            for name in ("target", "test_data"):
                if getattr(self, name):
                    raise ValueError(f"{name}: applies only with --data (a table file)")
            return
        for name in ("data", "test_data"):
            value = getattr(self, name)
            if value and os.path.splitext(value)[1].lower() not in TABLE_SUFFIXES:
                raise ValueError(f"{name}: {value} is neither a .csv nor an .npz file")
        if self.dataset != os.path.basename(self.data):
            raise ValueError(f"dataset: {self.dataset!r} and data {self.data!r} both given; a table's runs are "
                             "named after its file, so give only --data")
        if isinstance(self.test_fraction, bool) or not isinstance(self.test_fraction, (int, float)) \
                or not 0.0 < self.test_fraction <= 0.5:
            raise ValueError(f"test_fraction: expected a number in (0, 0.5], got {self.test_fraction!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("backend")  # the old spelling of path, always converted: never written
        d["widths"] = list(self.resolved_widths())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"config: unknown settings {sorted(unknown)}")
        d = dict(d)
        if d.get("backend") is not None and d.get("path") is None:  # written before path had its name
            d["path"] = PATH_OF_OLD_BACKEND.get(d["backend"], d["backend"])
            d.pop("backend")
        if d.get("widths") is not None:
            d["widths"] = tuple(d["widths"])
        return cls(**d)
