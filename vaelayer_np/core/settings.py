"""The settings of the model and of the two training methods: defaults and allowed values.

This is the one source. The layers, the network, :mod:`.iffcl`, :mod:`.backprop` and the
run configuration (:class:`vaelayer_np.run.config.TrainConfig`, and through it the command
line) read their defaults here, so a layer or a step built with defaults is the one that
``vaelayer train`` trains. The reason for each default is in docs/method.md.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from .activations import ACTIVATIONS

DEFAULTS: dict[str, Any] = {
    # the VAE layer
    "activation": "relu",        # VAE layer output act(mu) or act(z); also the encoder's hidden activation
    "beta": 1e-3,                # weight of each layer's KL term
    "recon": "mse",              # first layer's reconstruction loss (deeper layers: always mse)
    "encoder_hidden": 1024,      # width of the hidden layer inside each encoder (0: linear encoder)
    "log_var_bound": 6.0,        # c in log_var = c * tanh(r / c)
    "log_var_bias_init": -4.0,   # initial bias of the log-variance head (small initial noise)
    "pass_on": "mean",           # what the next layer receives in training: act(mu) or act(z)
    # the network
    "readout": "all",            # the output layer reads every VAE layer's output, or the last
    "output_loss": "softmax",    # softmax cross-entropy, or BCE on one-hot targets
    # IFFCL
    "pairing": "random",         # net B sees a random partner of each example (target: do the labels agree)
    "contrast": "all_pairs",     # cosine term over every A row against every B row (or: one partner per example)
    "cosine_on": "latent",       # the cosine term acts on z (or on the layer's output)
    "lam": 10.0,                 # weight of the cosine term
    "margin": 0.5,               # cosine embedding margin for target -1
    "head_weight": 0.0,          # weight of each layer's local classifier head in its local loss (0: no heads)
    # backprop baseline
    "backprop_neg_elbo_weight": 0.0,  # weight of the layers' negative ELBOs added to the classification loss
}

CHOICES = {
    "activation": tuple(ACTIVATIONS),
    "recon": ("mse", "bce"),
    "pass_on": ("sample", "mean"),
    "readout": ("last", "all"),
    "output_loss": ("softmax", "bce"),
    "pairing": ("random", "balanced", "mirror"),
    "contrast": ("partner", "all_pairs"),
    "cosine_on": ("latent", "output"),
}

REMOVED_IN = "0.4.0"
"""The release that removes the compatibility shims: the old spellings below, the IFFCL keywords of
:func:`settings_from_keywords` and the old module names of :mod:`vaelayer_np._compat`."""

# Old spellings of some choices, accepted for one release (with a DeprecationWarning):
# "labelled" pairing was a random partner, "pairs" one partner per example, "batch" all pairs.
RENAMED = {
    "pairing": {"labelled": "random"},
    "contrast": {"pairs": "partner", "batch": "all_pairs"},
    "predict": {"a": "twin_a"},
}


def canonical(name: str, value: Any) -> Any:
    """The current spelling of the choice ``value`` of setting ``name`` (old spellings: see :data:`RENAMED`)."""
    new = RENAMED.get(name, {}).get(value) if isinstance(value, str) else None
    if new is None:
        return value
    warnings.warn(f"{name}: {value!r} is now spelled {new!r}; the old spelling will be removed in a later release",
                  DeprecationWarning, stacklevel=3)
    return new


@dataclass(frozen=True)
class IFFCLSettings:
    """IFFCL's knobs as one checked, frozen object: built once (from a run's configuration, or from the
    keyword arguments of :func:`vaelayer_np.core.iffcl.train_step`), then handed unchanged to every piece
    of the step down to the arithmetic: the serial step, the twins on two threads and the pipeline read
    their settings here and nowhere else.

    Attributes (defaults: :data:`DEFAULTS`): ``pairing`` (who twin B sees), ``lam`` (the cosine term's
    weight, >= 0), ``margin`` (the cosine margin of target -1, in [-1, 1]), ``contrast`` (one partner per
    example, or all pairs), ``cosine_on`` (the latent z or the layer's output), ``head_weight`` (the local
    heads' weight, >= 0). Old spellings of a choice are accepted with a DeprecationWarning; numbers are
    stored as Python floats.
    """

    pairing: str = DEFAULTS["pairing"]
    lam: float = DEFAULTS["lam"]
    margin: float = DEFAULTS["margin"]
    contrast: str = DEFAULTS["contrast"]
    cosine_on: str = DEFAULTS["cosine_on"]
    head_weight: float = DEFAULTS["head_weight"]

    def __post_init__(self) -> None:
        from ._validate import check_choice, check_number

        for name in ("pairing", "contrast", "cosine_on"):
            value = canonical(name, getattr(self, name))
            object.__setattr__(self, name, check_choice(name, value, CHOICES[name]))
        object.__setattr__(self, "lam", check_number("lam", self.lam, minimum=0.0))
        object.__setattr__(self, "margin", check_number("margin", self.margin, minimum=-1.0, maximum=1.0))
        object.__setattr__(self, "head_weight", check_number("head_weight", self.head_weight, minimum=0.0))


# The IFFCL settings that functions took one keyword at a time before they took one IFFCLSettings.
OLD_KEYWORDS = ("pairing", "lam", "margin", "contrast", "cosine_on", "head_weight")


def settings_from_keywords(function: str, settings: IFFCLSettings | None, keywords: dict[str, Any],
                           base: IFFCLSettings | None = None) -> IFFCLSettings:
    """The :class:`IFFCLSettings` of a call of ``function``: ``settings`` as given, or ``base`` (default:
    ``IFFCLSettings()``) when it is None.

    ``keywords`` are the old spellings of the call, one keyword per setting (``lam=1.0, margin=0.2``):
    accepted until :data:`REMOVED_IN` with a DeprecationWarning, and applied over ``settings`` (or
    ``base``). A keyword that is not one of :data:`OLD_KEYWORDS` raises TypeError, as for any function.
    """
    if settings is not None and not isinstance(settings, IFFCLSettings):
        raise ValueError(f"settings: expected an IFFCLSettings, got {type(settings).__name__}")
    chosen = settings if settings is not None else (base if base is not None else IFFCLSettings())
    if not keywords:
        return chosen
    unknown = sorted(set(keywords) - set(OLD_KEYWORDS))
    if unknown:
        raise TypeError(f"{function}() got an unexpected keyword argument {unknown[0]!r}")
    given = ", ".join(f"{k}={v!r}" for k, v in keywords.items())
    warnings.warn(f"{function}({given}): pass settings=IFFCLSettings({given}) instead; the keywords will be "
                  f"removed in release {REMOVED_IN}", DeprecationWarning, stacklevel=3)
    from dataclasses import replace

    return replace(chosen, **keywords)
