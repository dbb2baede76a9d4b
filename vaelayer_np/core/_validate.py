"""Input checks shared by every public function.

Each check raises a ``ValueError`` that names the argument and says what was
expected, so that a user never meets a traceback from deep inside NumPy.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class NonFiniteError(ValueError):
    """A value became NaN or inf (an input, a loss, a gradient): raised where it is found, naming it.

    A ``ValueError``, so code that catches bad input catches it too; training catches it by type
    (never by matching message text) to stop a diverging run and keep its last good checkpoint.
    """


def _shape_str(shape):
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"


def check_float_array(name, x, shape=None, dtype=None, finite=True):
    """Return ``x`` after checking that it is a finite float32/float64 ndarray.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    x : object
        The value to check.
    shape : tuple of (int or None), optional
        Expected shape; ``None`` entries match any size. Its length fixes ndim.
    dtype : numpy dtype, optional
        If given, ``x`` must have exactly this dtype (a layer's dtype).
    finite : bool
        Reject NaN and inf.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy ndarray, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != np.dtype(dtype):
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)} (the layer's dtype), got {x.dtype}")
    if shape is not None:
        ok = x.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape))
        if not ok:
            raise ValueError(f"{name}: expected shape {_shape_str(shape)}, got {x.shape}")
        if len(shape) >= 1 and x.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one row, got shape {x.shape}")
    if finite and not np.isfinite(x).all():
        raise NonFiniteError(f"{name}: contains NaN or inf")
    return x


def check_same_shape(name_a, a, name_b, b):
    if a.shape != b.shape:
        raise ValueError(f"{name_b}: expected the same shape as {name_a} {a.shape}, got {b.shape}")


def check_labels(name, y, n, n_classes=None):
    """Integer class labels of shape (n,), each in [0, n_classes)."""
    if not isinstance(y, np.ndarray):
        raise ValueError(f"{name}: expected a numpy ndarray of integer labels, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer class labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {y.shape}")
    if n_classes is not None and y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name}: labels must lie in [0, {n_classes}), got range [{y.min()}, {y.max()}]")
    return y


def check_targets_pm1(name, t, n):
    """Cosine targets: shape (n,), every entry +1 or -1."""
    if not isinstance(t, np.ndarray):
        raise ValueError(f"{name}: expected a numpy ndarray of +1/-1 targets, got {type(t).__name__}")
    if t.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {t.shape}")
    if t.dtype.kind not in "iuf":
        raise ValueError(f"{name}: expected numeric +1/-1 targets, got dtype {t.dtype}")
    if not np.all((t == 1) | (t == -1)):
        raise ValueError(f"{name}: every target must be +1 or -1")
    return t


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: unknown option {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def check_positive(name, value, allow_zero=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name}: expected {need}, got {value!r}")
    return v


def check_finite(name, value):
    """A finite real number (not a bool, not NaN or inf)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return v


def check_threads(n, name="threads", cap=False):
    """``n`` as a positive int, or None (no limit); anything else raises ValueError naming ``name``.

    A count above the cores this process may use (:func:`usable_cores`) is refused, or with
    ``cap=True`` lowered to that number (a stored setting from a larger machine).
    """
    if n is None:
        return None
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}: expected a positive integer (BLAS threads) or None, got {n!r}")
    cores = usable_cores()
    if n > cores:
        if cap:
            return cores
        raise ValueError(f"{name}: {n} threads is more than the {cores} core{'' if cores == 1 else 's'} this process "
                         f"may use; expected an integer in 1..{cores}")
    return int(n)


def usable_cores():
    """The number of cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory():
    """Bytes of memory a new allocation may use, or None where unknown.

    The smaller of the system's available memory (``MemAvailable`` in /proc/meminfo) and, under
    ``ulimit -v``, the address space left below that limit.
    """
    import resource

    limits = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, ValueError):
        soft = resource.RLIM_INFINITY
    if soft != resource.RLIM_INFINITY:
        used = 0
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmSize:"):
                        used = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
        limits.append(max(0, soft - used))
    return min(limits) if limits else None


def format_bytes(n):
    """``"1.5 GB"``, ``"800 MB"``, ``"12 kB"`` (powers of 1000)."""
    n = float(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def check_memory(name, nbytes, what):
    """Refuse, naming ``name``, an allocation of about ``nbytes`` bytes that the memory available cannot hold."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ValueError(f"{name}: {what} needs about {format_bytes(nbytes)} of memory, more than the "
                         f"{format_bytes(available)} available; choose smaller sizes")
    return nbytes
