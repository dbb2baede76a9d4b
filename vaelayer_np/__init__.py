"""vaelayer_np: the Variational Autoencoder Layer and IFFCL local training, in plain NumPy.

Modules, one concept each:

- :mod:`.config` : every setting, its default and its allowed values (one source)
- :mod:`.activations`, :mod:`.losses` : element-wise functions and losses with their gradients
- :mod:`.ops`, :mod:`.backend`, :mod:`._kernels` : the hot operations (one NumPy reference each),
  the backend table, and the Numba kernels that mirror them
- :mod:`.layers` : ``Dense``, ``Activation``, ``VAELayer``, ``OutputLayer`` (forward / backward)
- :mod:`.optim` : ``SGD`` and ``Adam`` over parameter dicts
- :mod:`.gradcheck` : finite-difference checks of every gradient
- :mod:`.network` : a stack of VAE layers and an output layer (one twin)
- :mod:`.iffcl`, :mod:`.backprop` : the two training methods, side by side
- :mod:`.trainer` : the training loop around either method
- :mod:`.data`, :mod:`.checkpoint`, :mod:`.runs`, :mod:`.plots`, :mod:`.cli` : datasets, files, run
  folders, figures, commands
- :mod:`.estimator`, :mod:`.tables`, :mod:`.threads` : your own data: ``VAELayerClassifier`` (scikit-learn),
  tables from CSV / ``.npz`` files, the BLAS thread limit

Nothing runs at import time.
"""
from .activations import ACTIVATIONS, get_activation
from .config import CHOICES, DEFAULTS, TrainConfig
from .layers import Activation, Dense, OutputLayer, VAELayer
from .network import Network
from .optim import SGD, Adam
from .trainer import Trainer

__version__ = "0.2.0"

_LAZY = {"VAELayerClassifier": "estimator", "load_table": "tables", "limit_threads": "threads"}


def __getattr__(name):
    # imported on first use, so `python -m vaelayer_np.estimator` (or .tables, .threads) runs its module once
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["VAELayerClassifier", "load_table", "limit_threads", "ACTIVATIONS", "get_activation", "CHOICES",
           "DEFAULTS", "TrainConfig", "Activation", "Dense",
           "OutputLayer", "VAELayer", "Network", "SGD", "Adam", "Trainer", "__version__"]
