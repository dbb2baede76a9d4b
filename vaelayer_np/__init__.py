"""vaelayer_np: the Variational Autoencoder Layer and IFFCL local training, in plain NumPy.

Modules, one concept each:

- :mod:`.activations`, :mod:`.losses` : element-wise functions and losses with their gradients
- :mod:`.layers` : ``Dense``, ``Activation``, ``VAELayer``, ``OutputLayer`` (forward / backward)
- :mod:`.optim` : ``SGD`` and ``Adam`` over parameter dicts
- :mod:`.gradcheck` : finite-difference checks of every gradient
- :mod:`.ops`, :mod:`.backend`, :mod:`._kernels` : the hot operations, NumPy and Numba backends
- :mod:`.network`, :mod:`.iffcl`, :mod:`.backprop` : twin stacks, local training, the baseline
- :mod:`.data`, :mod:`.checkpoint`, :mod:`.plots`, :mod:`.cli` : datasets, run folders, figures, commands

Nothing runs at import time.
"""
from .activations import ACTIVATIONS, get_activation
from .layers import Activation, Dense, OutputLayer, VAELayer
from .optim import SGD, Adam

__version__ = "0.1.0"

__all__ = ["ACTIVATIONS", "get_activation", "Activation", "Dense", "OutputLayer", "VAELayer", "SGD", "Adam",
           "__version__"]
