"""Input checks shared by every public function.

Each check raises a ``ValueError`` that names the argument and says what was
expected, so that a user never meets a traceback from deep inside NumPy.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import DTypeLike

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_T = TypeVar("_T")


class NonFiniteError(ValueError):
    """A value became NaN or inf (an input, a loss, a gradient): raised where it is found, naming it.

    A ``ValueError``, so code that catches bad input catches it too; training catches it by type
    (never by matching message text) to stop a diverging run and keep its last good checkpoint.
    """


def _shape_str(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"


def check_float_array(name: str, x: Any, shape: tuple[int | None, ...] | None = None, dtype: DTypeLike | None = None,
                      finite: bool = True) -> np.ndarray:
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
    if dtype is not None and x.dtype != check_dtype(dtype):
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


def check_same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_b}: expected the same shape as {name_a} {a.shape}, got {b.shape}")


def check_labels(name: str, y: Any, n: int, n_classes: int | None = None) -> np.ndarray:
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


def check_targets_pm1(name: str, t: Any, n: int) -> np.ndarray:
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


# ----------------------------------------------------------------------------- scalars: one place for the pitfalls
# NumPy and Python make a few values look valid when they are not. Every check of a single value goes
# through the helpers below, which handle them once:
#   * ``np.dtype(None)`` is float64, and NumPy compares a dtype equal to None: a dtype that failed to parse
#     must never be compared with the allowed ones (check_dtype refuses None and anything np.dtype refuses);
#   * NaN compares unequal to everything, so ``x > bound`` is False for NaN: a bound is tested as
#     ``not (x <= bound)`` or after refusing non-finite values (fails_bound);
#   * ``bool`` is a subclass of ``int`` and ``np.bool_`` converts to a float: both are refused as numbers;
#   * a string converts with ``float("3")``, and a 0-d array passes ``float()``: a string is refused, a numpy
#     scalar or a 0-d numeric array is taken as the Python number it holds (returned: store the result).

def is_bool(value: Any) -> bool:
    """True for Python's and NumPy's booleans (which ``isinstance(value, int)`` and ``float()`` accept)."""
    return isinstance(value, (bool, np.bool_))


def _scalar(name: str, value: Any, what: str) -> int | float:
    """``value`` as a Python int or float, if it is a real number (a numpy scalar or 0-d array included);
    otherwise a ValueError naming ``name``."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if is_bool(value) or isinstance(value, (str, bytes)) or not isinstance(value, (int, float, np.integer,
                                                                                     np.floating)):
        raise ValueError(f"{name}: expected {what}, got {value!r} ({type(value).__name__})")
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def check_int(name: str, value: Any, minimum: float | None = None, maximum: float | None = None) -> int:
    """An integer (a numpy integer or 0-d integer array accepted; bool, float, str refused) in
    [minimum, maximum]; returned as a Python int."""
    if minimum == 1 and maximum is None:
        what = "a positive integer"
    elif minimum is not None and maximum is not None:
        what = f"an integer >= {minimum} and <= {maximum}"
    elif minimum is not None:
        what = f"an integer >= {minimum}"
    else:
        what = "an integer" + (f" <= {maximum}" if maximum is not None else "")
    v = _scalar(name, value, what)
    if not isinstance(v, int) or (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return v


def check_number(name: str, value: Any, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None) -> float:
    """A finite real number (not a bool, a string, NaN or inf) with ``minimum <= value <= maximum`` and
    ``value > above`` where given; returned as a Python float."""
    v = float(_scalar(name, value, "a number"))
    if minimum is not None and maximum is not None:
        need = f"a number in [{minimum:g}, {maximum:g}]"
    else:
        parts = [f">= {minimum:g}" if minimum is not None else "", f"<= {maximum:g}" if maximum is not None else "",
                 f"> {above:g}" if above is not None else ""]
        need = " ".join(["a finite number", " and ".join(p for p in parts if p)]).strip()
    if not np.isfinite(v) or (minimum is not None and not v >= minimum) \
            or (maximum is not None and not v <= maximum) or (above is not None and not v > above):
        raise ValueError(f"{name}: expected {need}, got {value!r}")
    return v


def check_dtype(dtype: Any, name: str = "dtype", allowed: Sequence[np.dtype] = FLOAT_DTYPES) -> np.dtype:
    """``dtype`` as a numpy dtype, one of ``allowed`` (float32 or float64 by default).

    ``None``, a string NumPy does not know (``"abc"``), a bool and anything ``np.dtype`` refuses raise a
    ValueError naming ``name``: a dtype that failed to parse is never compared with the allowed ones
    (NumPy compares a dtype equal to None, and ``np.dtype(None)`` is float64)."""
    names = " or ".join(str(d) for d in allowed)
    if dtype is None or is_bool(dtype):
        raise ValueError(f"{name}: expected {names}, got {dtype!r}")
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {names}, got {dtype!r} (not a dtype NumPy knows)") from None
    if not any(dt == a for a in allowed):
        raise ValueError(f"{name}: expected {names}, got {dtype!r} ({dt})")
    return dt


def fails_bound(figure: Any, bound: float) -> bool:
    """True when ``figure`` is not a finite number at most ``bound``: NaN and inf fail (``figure > bound``
    alone is False for NaN). The one comparison of a measured figure with its bound."""
    try:
        f = float(figure)
    except (TypeError, ValueError):
        return True
    return not (np.isfinite(f) and f <= bound)


def check_choice(name: str, value: _T, choices: Sequence[Any]) -> _T:
    """``value`` if it is one of ``choices`` (compared only with values of the same type: an array or another
    unhashable object is refused by name, not compared element-wise)."""
    if not any(is_bool(value) == is_bool(c) and isinstance(value, type(c)) and value == c for c in choices):
        raise ValueError(f"{name}: unknown option {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def check_positive(name: str, value: Any, allow_zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with ``allow_zero``): :func:`check_number`'s rules; returned as a float."""
    if allow_zero:
        return check_number(name, value, minimum=0.0)
    return check_number(name, value, above=0.0)


def check_finite(name: str, value: Any) -> float:
    """A finite real number (not a bool, a string, NaN or inf): :func:`check_number`; returned as a float."""
    return check_number(name, value)


def check_path(name: str, value: Any) -> Path:
    """``value`` as a Path, if it is a file or folder path: a ``str`` or an ``os.PathLike`` that is not empty.

    Anything else (None, a number, bytes) is a TypeError naming ``name``, not pathlib's unnamed one; an empty
    text is a ValueError (``Path("")`` is the current folder, which the user never meant)."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise TypeError(f"{name}: expected a file path (str or os.PathLike), got {value!r} ({type(value).__name__})")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise TypeError(f"{name}: expected a file path as text, got {text!r} ({type(text).__name__})")
    if not text.strip():
        raise ValueError(f"{name}: the path is empty; give a file or folder")
    return Path(text)
