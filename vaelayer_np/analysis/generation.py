r"""Generating from a stack of VAE layers: reconstructions, samples and traversals, in input space.

Each VAE layer k has its own decoder, which maps its latent :math:`z_k` back to *its own
input*: the output of layer k-1, :math:`\mathrm{act}(z_{k-1})` (pixels for layer 0). To see a
deep layer's latent as an image, :func:`decode_to_input` carries it down through the decoders
below::

    h = decode_k(z_k)          # approximates act(z_{k-1})
    h = decode_{k-1}(h)        # treats that as z_{k-1}
    ...
    h = decode_0(h)            # pixels (a sigmoid on top when layer 0 uses recon="bce")

Feeding a reconstruction of :math:`\mathrm{act}(z_{k-1})` to a decoder that expects
:math:`z_{k-1}` is exact for the identity activation and an approximation otherwise: with
ReLU, every negative coordinate of :math:`z_{k-1}` was clipped to 0 on the way up, so the
decoder below receives 0 (or a small value) where the latent had a negative number.

Functions: :func:`decode_to_input`, :func:`reconstruct`, :func:`fit_aggregate_posterior`,
:func:`sample_latents`, :func:`sample_images`, :func:`traverse`, :func:`nearest_neighbour_error` (how far
samples are from the data), and :func:`image_grid` to draw rows of images.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core._validate import check_choice, check_float_array, check_positive
from ..core.activations import sigmoid
from ..core.layers import RngLike, _as_rng
from .diagnostics import encode_layers

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAMPLE_SOURCES = ("prior", "aggregate")


def _check_layer_index(net: Any, k: int) -> int:
    n = len(net.vae_layers)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < n:
        raise ValueError(f"k: expected a VAE layer index in 0..{n - 1}, got {k!r}")
    return int(k)


def to_input_space(net: Any, h: np.ndarray) -> np.ndarray:
    """The first layer's decoder output as input values: ``sigmoid`` of its logits when it
    reconstructs with ``recon="bce"``, else the output itself."""
    return sigmoid(h) if net.vae_layers[0].recon == "bce" else h


def decode_to_input(net: Any, k: int, z: np.ndarray) -> np.ndarray:
    r"""Decode a latent of VAE layer ``k`` down to the network's input space (pixels).

    .. math::
        h_k = z W^{dec}_k + b^{dec}_k, \qquad h_{j} = h_{j+1} W^{dec}_{j} + b^{dec}_{j}
        \quad (j = k-1, \dots, 0)

    and :math:`\sigma(h_0)` when layer 0 reconstructs with ``recon="bce"`` (its decoder gives
    logits). Each decoder j < k receives the reconstruction of :math:`\mathrm{act}(z_j)`
    in place of :math:`z_j`: exact when ``act`` is the identity, an approximation otherwise
    (see the module docstring).

    Parameters
    ----------
    net : :class:`~vaelayer_np.core.network.Network`
    k : int, the layer whose latent ``z`` is (0 = the first VAE layer)
    z : (M, K_k) float array, latents of layer k (cast to the network's dtype)

    Returns
    -------
    (M, D) array in input space
    """
    k = _check_layer_index(net, k)
    z = np.asarray(z)
    check_float_array("z", z, shape=(None, net.widths[k]))
    h = z.astype(net.dtype)
    for j in range(k, -1, -1):
        h = net.vae_layers[j].decode(h)
    return to_input_space(net, h)


def reconstruct(net: Any, x: np.ndarray) -> list[np.ndarray]:
    """Each VAE layer's reconstruction of ``x``, carried down to input space (the mean path).

    Layer k encodes (on the evaluation path, no noise) and its latent mean is decoded by
    :func:`decode_to_input`: for layer 0 this is the layer's own reconstruction
    :math:`\\hat x`; for deeper layers it is layer k's reconstruction of its input, seen
    through the decoders below.

    Parameters
    ----------
    net : Network
    x : (N, D) array

    Returns
    -------
    list of (N, D) arrays, one per VAE layer
    """
    return [decode_to_input(net, k, mu) for k, (mu, _) in enumerate(encode_layers(net, x))]


def fit_aggregate_posterior(mu: np.ndarray, log_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The aggregate posterior of one layer, fitted as a diagonal Gaussian.

    The aggregate posterior is the mixture :math:`q(z) = \frac1N\sum_n \mathcal N(z;\mu_n,
    \mathrm{diag}\,\sigma_n^2)` of the posteriors of the data: where the encoder actually puts
    the data. Its mean and variance per unit (law of total variance) are

    .. math::
        m_k = \frac1N\sum_n \mu_{nk}, \qquad
        s_k^2 = \underbrace{\frac1N\sum_n (\mu_{nk} - m_k)^2}_{\text{spread of the means}}
        + \underbrace{\frac1N\sum_n \sigma_{nk}^2}_{\text{mean noise variance}}

    Parameters
    ----------
    mu, log_var : (N, K) float arrays, the layer's means and log-variances on N examples

    Returns
    -------
    mean, std : (K,) float64 arrays
    """
    check_float_array("mu", mu, shape=(None, None))
    check_float_array("log_var", log_var, shape=mu.shape)
    mu64 = mu.astype(np.float64)
    mean = mu64.mean(axis=0)
    var = mu64.var(axis=0) + np.exp(log_var.astype(np.float64)).mean(axis=0)
    return mean, np.sqrt(var)


def sample_latents(n: int, mean: np.ndarray, std: np.ndarray, rng: RngLike = None) -> np.ndarray:
    r"""Draw ``n`` latents from a diagonal Gaussian :math:`\mathcal N(m, \mathrm{diag}\,s^2)`.

    .. math:: z_i = m + s \odot \epsilon_i, \qquad \epsilon_i \sim \mathcal N(0, I)

    with the noise drawn in one call, ``rng.standard_normal((n, K))``. The prior is
    ``mean = zeros(K), std = ones(K)``; the aggregate posterior comes from
    :func:`fit_aggregate_posterior`.

    Parameters
    ----------
    n : int >= 1
    mean, std : (K,) float arrays, std >= 0
    rng : int, Generator or None

    Returns
    -------
    (n, K) float64 array
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    mean = check_float_array("mean", np.asarray(mean, dtype=np.float64), shape=(None,))
    std = check_float_array("std", np.asarray(std, dtype=np.float64), shape=mean.shape)
    if np.any(std < 0):
        raise ValueError("std: expected standard deviations >= 0")
    eps = _as_rng(rng).standard_normal((int(n), mean.shape[0]))
    return mean + std * eps


def sample_images(net: Any, k: int, n: int, source: str = "aggregate", x: np.ndarray | None = None,
                  rng: RngLike = None) -> np.ndarray:
    """Images decoded from ``n`` samples of layer ``k``'s latent space.

    Parameters
    ----------
    net : Network
    k : int, the VAE layer
    n : int, number of samples
    source : str, "prior" or "aggregate"
        ``"prior"``: :math:`\\mathcal N(0, I)`, the distribution the KL term pulls towards.
        ``"aggregate"``: the aggregate posterior on ``x``, fitted by :func:`fit_aggregate_posterior`.
    x : (N, D) array, the data to fit the aggregate posterior on (needed for ``"aggregate"``)
    rng : int, Generator or None

    Returns
    -------
    (n, D) array in input space
    """
    k = _check_layer_index(net, k)
    check_choice("source", source, SAMPLE_SOURCES)
    width = net.widths[k]
    if source == "prior":
        mean, std = np.zeros(width), np.ones(width)
    else:
        if x is None:
            raise ValueError("x: source='aggregate' needs the data to fit the aggregate posterior on")
        mean, std = fit_aggregate_posterior(*encode_layers(net, x)[k])
    return decode_to_input(net, k, sample_latents(n, mean, std, rng))


def traverse(net: Any, k: int, x_point: np.ndarray, unit: int, values: Any) -> np.ndarray:
    r"""A latent traversal: vary one unit of layer ``k``, hold the others at a data point's means.

    .. math::
        z^{(i)} = \mu_k(x), \quad z^{(i)}_{u} = v_i, \qquad \text{image}_i =
        \mathrm{decode\_to\_input}(k, z^{(i)})

    Parameters
    ----------
    net : Network
    k : int, the VAE layer
    x_point : (D,) or (1, D) array, one input
    unit : int, the latent unit u of layer k to vary
    values : (V,) float array, the values v_i given to that unit

    Returns
    -------
    (V, D) array in input space, one image per value
    """
    k = _check_layer_index(net, k)
    x_point = np.asarray(x_point, dtype=net.dtype).reshape(1, -1)
    width = net.widths[k]
    if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < width:
        raise ValueError(f"unit: expected a latent unit index in 0..{width - 1}, got {unit!r}")
    values = check_float_array("values", np.asarray(values, dtype=np.float64), shape=(None,))
    mu = encode_layers(net, x_point)[k][0].astype(np.float64)
    z = np.repeat(mu, values.shape[0], axis=0)
    z[:, unit] = values
    return decode_to_input(net, k, z)


def nearest_neighbour_error(samples: np.ndarray, data: np.ndarray, chunk: int = 256) -> float:
    r"""How far generated images are from the data: the mean, over samples, of the squared error per
    pixel to the *nearest* data image.

    .. math:: e = \frac1M \sum_{i=1}^{M} \min_{n} \frac1D \lVert s_i - x_n \rVert^2

    Small when every sample looks like some real image; a sample from a region of latent space the
    decoder never saw lands far from all of them. (It does not reward variety: copies of one training
    image score 0.)

    Parameters
    ----------
    samples : (M, D) float array
    data : (N, D) float array
    chunk : int, samples compared at a time (memory: chunk * N * D floats)

    Returns
    -------
    float >= 0
    """
    check_float_array("samples", samples, shape=(None, None))
    check_float_array("data", data, shape=(None, samples.shape[1]))
    data64 = data.astype(np.float64)
    data_sq = np.sum(data64 * data64, axis=1)
    nearest = []
    for start in range(0, samples.shape[0], int(chunk)):
        s = samples[start:start + int(chunk)].astype(np.float64)
        sq = np.sum(s * s, axis=1)[:, None] - 2.0 * s @ data64.T + data_sq[None, :]
        nearest.append(np.maximum(sq.min(axis=1), 0.0) / samples.shape[1])
    return float(np.mean(np.concatenate(nearest)))


def image_grid(rows: Sequence[np.ndarray], image_shape: tuple[int, ...], row_labels: Sequence[str] | None = None,
               title: str = "", size: float = 0.7, dpi: int = 75) -> Figure:
    """Draw rows of images (values clipped to [0, 1], gray) and return the matplotlib figure.

    Parameters
    ----------
    rows : list of (M, D) arrays, one row of M images each (rows may have different M)
    image_shape : tuple, (H, W) or (C, H, W)
    row_labels : list of str, optional, one per row
    title : str
    size : float, inches per image
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    check_positive("size", size)
    if not rows:
        raise ValueError("rows: expected at least one row of images")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"row_labels: expected {len(rows)} labels, got {len(row_labels)}")
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(size * n_cols + 0.6, size * len(rows) + 0.3),
                             squeeze=False, dpi=dpi)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            img = np.asarray(row[j], dtype=np.float64).reshape(image_shape)
            if len(image_shape) == 3:  # CHW -> HWC
                img = np.transpose(img, (1, 2, 0))
            ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.2)
    return fig
