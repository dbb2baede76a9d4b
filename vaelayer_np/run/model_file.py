"""The file of a saved :class:`vaelayer_np.run.estimator.VAELayerClassifier`: what ``save`` writes and ``load``
checks, entry by entry.

One ``.npz`` archive, written atomically (:func:`vaelayer_np.run.checkpoint.save_npz_atomic`) and read
without pickles (:func:`vaelayer_np.run.checkpoint.load_npz`), beside the run folders' checkpoints:
``format`` and ``format_version``; the estimator's parameters and the training configuration as JSON;
the input and class counts, the classes (:data:`CLASS_KINDS`), the standardisation, the latent statistics,
the loss curve; and every array of the trainer's state under ``trainer/``. Every entry is checked before
it is used, and an error names the file and the entry.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from ..core._validate import check_path
from ..fast.machine import usable_cores
from .checkpoint import load_npz, save_npz_atomic
from .config import TrainConfig

if TYPE_CHECKING:
    from .trainer import Trainer

# run.estimator.VAELayerClassifier, which imports this module: named here, not imported
_Estimator = Any

FILE_FORMAT = "vaelayer_np.VAELayerClassifier"
FILE_VERSION = 1


def _is_int(v: Any) -> TypeGuard[int | np.integer]:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def write(model: _Estimator, path: str | Path) -> Path:
    """Write the fitted ``model`` to ``path`` (atomically); returns the path. Labels or entries that would
    not load back unchanged are refused before anything is written."""
    path = check_path("path", path)
    params = model.get_params()
    if not isinstance(params["random_state"], (int, np.integer, type(None))):
        params["random_state"] = None  # a RandomState object is not stored; the seed used is in the config
    params = {k: _plain(v) for k, v in params.items()}
    classes = np.asarray(model.classes_)
    kind, stored = _encode_classes(classes)
    arrays = {
        "format": np.array(FILE_FORMAT), "format_version": np.array(FILE_VERSION),
        "params_json": np.array(json.dumps(params)),
        "config_json": np.array(json.dumps(model.trainer_.config.to_dict())),
        "n_features_in": np.array(model.n_features_in_), "n_classes": np.array(len(classes)),
        "classes": stored, "classes_kind": np.array(kind),
        "mean": model.mean_, "scale": model.scale_, "n_iter": np.array(model.n_iter_),
        "loss_curve": np.array(model.loss_curve_, dtype=np.float64),
        "validation_scores": np.array(model.validation_scores_, dtype=np.float64),
    }
    for k, (m, s) in enumerate(zip(model.latent_mean_, model.latent_std_)):
        arrays[f"latent_mean.{k}"], arrays[f"latent_std.{k}"] = m, s
    for key, value in model.trainer_.state_dict().items():
        arrays["trainer/" + key] = value
    # what load would refuse is refused here, before anything is written: the same checks on the same entries
    try:
        back = from_arrays(type(model), path, arrays).classes_
    except ValueError as exc:
        raise ValueError(f"cannot save: the file would not load ({exc}); nothing was written") from None
    _check_same_classes(path, classes, back)
    save_npz_atomic(path, arrays)
    return Path(path)


def read(cls: type[_Estimator], path: str | Path) -> _Estimator:
    """The model of class ``cls`` saved in ``path``, every entry checked."""
    path = check_path("path", path)
    return from_arrays(cls, path, load_npz(path))


def from_arrays(cls: type[_Estimator], path: str | Path, arrays: dict[str, np.ndarray]) -> _Estimator:
    """The model of the entries ``arrays`` of the file ``path`` (what :func:`read` reads, checked)."""
    fmt = arrays.get("format")
    if fmt is None or fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != FILE_FORMAT:
        raise ValueError(f"{path}: not a saved VAELayerClassifier (no 'format' entry {FILE_FORMAT!r}); "
                         "write one with VAELayerClassifier.save")
    entry = _Entries(path, arrays)
    version = entry.integer("format_version")
    if version != FILE_VERSION:
        raise ValueError(f"{path}: a VAELayerClassifier file of format version {version}; this version "
                         f"reads version {FILE_VERSION}")
    params = entry.json("params_json")
    known = set(cls().get_params())
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{path}: entry 'params_json' holds parameters this version does not know "
                         f"({', '.join(map(str, unknown))})")
    if isinstance(params.get("widths"), list):
        params["widths"] = tuple(params["widths"])
    model = cls(**params)
    try:
        model._check_fit_params()
    except ValueError as exc:
        raise ValueError(f"{path}: entry 'params_json': {exc}") from None
    config = entry.json("config_json")
    threads = config.get("threads")
    if _is_int(threads) and threads > usable_cores():  # saved on a larger machine
        config["threads"] = usable_cores()
    try:
        trainer_config = TrainConfig.from_dict(config).validate()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: entry 'config_json' is not a valid configuration ({exc})") from None
    widths = trainer_config.resolved_widths()
    n_features = entry.integer("n_features_in", minimum=1)
    n_classes = entry.integer("n_classes", minimum=2)
    kind = entry.text("classes_kind", CLASS_KINDS)
    model.classes_ = entry.classes("classes", n_classes, kind)
    model.n_features_in_ = n_features
    model.mean_ = entry.floats("mean", (n_features,))
    model.scale_ = entry.floats("scale", (n_features,), positive=True)
    model.n_iter_ = entry.integer("n_iter", minimum=0)
    model.loss_curve_ = entry.floats("loss_curve", (None,)).tolist()
    model.validation_scores_ = entry.floats("validation_scores", (None,), low=0.0, high=1.0).tolist()
    model.latent_mean_ = [entry.floats(f"latent_mean.{k}", (w,)) for k, w in enumerate(widths)]
    model.latent_std_ = [entry.floats(f"latent_std.{k}", (w,), low=0.0) for k, w in enumerate(widths)]
    state = {k[len("trainer/"):]: v for k, v in arrays.items() if k.startswith("trainer/")}
    try:
        from .runs import check_model_memory

        check_model_memory(trainer_config, n_features, n_classes)
        model.trainer_ = rebuild_trainer(config, n_features, n_classes, state)
    except (TypeError, ValueError) as exc:
        text = str(exc).replace("checkpoint: entry '", "entry 'trainer/")
        raise ValueError(f"{path}: {text}") from None
    model.widths_, model.encoder_hidden_ = tuple(widths), trainer_config.encoder_hidden
    return model


class _Entries:
    """Checked reads of the entries of a saved model: each error names the file and the entry."""

    def __init__(self, path: str | Path, arrays: dict[str, np.ndarray]) -> None:
        self.path, self.arrays = path, arrays

    def _get(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise ValueError(f"{self.path}: missing entry {key!r}; the file is damaged or not a saved "
                             "VAELayerClassifier")
        return self.arrays[key]

    def _fail(self, key: str, expected: Any, value: Any) -> ValueError:
        shown = f"dtype {value.dtype} shape {value.shape}"
        if value.size == 1 and value.dtype.kind in "biufU":
            shown += f" ({str(value.reshape(-1)[0])[:40]!r})"
        return ValueError(f"{self.path}: entry {key!r} must be {expected}, got {shown}")

    def integer(self, key: str, minimum: float | None = None) -> int:
        value = self._get(key)
        if value.shape != () or value.dtype.kind not in "iu":
            raise self._fail(key, "one integer", value)
        v = int(value)
        if minimum is not None and v < minimum:
            raise ValueError(f"{self.path}: entry {key!r} is {v}, expected an integer >= {minimum}")
        return v

    def text(self, key: str, choices: Sequence[str]) -> str:
        value = self._get(key)
        if value.shape != () or value.dtype.kind != "U" or str(value) not in choices:
            raise self._fail(key, f"one of {', '.join(map(repr, choices))}", value)
        return str(value)

    def json(self, key: str) -> Any:
        value = self._get(key)
        if value.shape != () or value.dtype.kind != "U":
            raise self._fail(key, "one JSON string", value)
        try:
            data = json.loads(str(value))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: entry {key!r} is not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: entry {key!r} must be a JSON object of settings, got "
                             f"{type(data).__name__}")
        return data

    def floats(self, key: str, shape: tuple[int | None, ...], positive: bool = False, low: float | None = None,
               high: float | None = None) -> np.ndarray:
        value = self._get(key)
        ok = value.dtype.kind == "f" and value.ndim == len(shape) and all(
            s is None or s == d for s, d in zip(shape, value.shape))
        if not ok:
            want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise self._fail(key, f"floats of shape {want}", value)
        if not np.isfinite(value).all():
            raise ValueError(f"{self.path}: entry {key!r} holds NaN or inf; expected finite numbers")
        if positive and (value <= 0).any():
            raise ValueError(f"{self.path}: entry {key!r} holds {float(value[value <= 0][0])}; expected numbers > 0")
        if low is not None and (value < low).any():
            raise ValueError(f"{self.path}: entry {key!r} holds {float(value[value < low][0])}; expected numbers "
                             f">= {low:g}")
        if high is not None and (value > high).any():
            raise ValueError(f"{self.path}: entry {key!r} holds {float(value[value > high][0])}; expected numbers "
                             f"<= {high:g}")
        return np.array(value, dtype=np.float64)

    def classes(self, key: str, n_classes: int, kind: str) -> np.ndarray:
        value = self._get(key)
        if kind == "object":
            value = self._object_classes(key, n_classes, value)
        kinds = {"numeric": "biuf", "string": "U", "integer": "U", "datetime": "Mm", "object": "O"}[kind]
        if value.shape != (n_classes,) or value.dtype.kind not in kinds:
            what = {"numeric": "numbers", "datetime": "datetimes or timedeltas"}.get(kind, "strings")
            raise self._fail(key, f"{n_classes} {what} (shape ({n_classes},), as 'n_classes' says)", value)
        if kind == "numeric" and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{self.path}: entry {key!r} holds NaN or inf; expected class labels")
        if kind == "datetime" and np.isnat(value).any():
            raise ValueError(f"{self.path}: entry {key!r} holds NaT; expected class labels")
        if kind == "integer":
            try:
                value = np.array([int(t) for t in value.tolist()], dtype=object)
            except ValueError:
                raise ValueError(f"{self.path}: entry {key!r} must hold integers written as text") from None
        listed = value.tolist() if value.dtype.kind not in "Mm" else value
        if any(not a < b for a, b in zip(listed, listed[1:])):
            raise ValueError(f"{self.path}: entry {key!r} must hold distinct labels in sorted order (as fit "
                             "stores them)")
        return value

    def _object_classes(self, key: str, n_classes: int, value: Any) -> np.ndarray:
        """Labels held as Python objects, stored as JSON [[type, text], ...] (see :func:`_encode_classes`)."""
        if value.shape != () or value.dtype.kind != "U":
            raise self._fail(key, "one JSON string of [type, text] pairs", value)
        try:
            pairs = json.loads(str(value))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: entry {key!r} is not valid JSON ({exc.msg})") from None
        if not isinstance(pairs, list) or len(pairs) != n_classes or not all(
                isinstance(p, list) and len(p) == 2 and p[0] in _OBJECT_LABELS and isinstance(p[1], str)
                for p in pairs):
            raise ValueError(f"{self.path}: entry {key!r} must list {n_classes} labels as [type, text] pairs with "
                             f"a type among {', '.join(_OBJECT_LABELS)} (as 'n_classes' says)")
        out = np.empty(n_classes, dtype=object)
        for i, (tag, text) in enumerate(pairs):
            try:
                out[i] = _OBJECT_LABELS[tag](text)
            except ValueError:
                raise ValueError(f"{self.path}: entry {key!r}: label {i} ({text[:40]!r}) is not a {tag}") from None
        return out


CLASS_KINDS = ("numeric", "string", "integer", "datetime", "object")
"""How a saved model stores its labels: numbers, bool, strings, datetime64 and timedelta64 as their own
arrays; labels held as Python objects (strings with trailing NUL characters, integers beyond 64 bits)
as JSON text of [type, text] pairs ("integer": the decimal text of files written before "object")."""
_OBJECT_LABELS = {"str": str, "numpy.str_": np.str_, "int": int}


def _plain(value: Any) -> Any:
    """A parameter as JSON holds it: NumPy scalars as Python numbers, arrays and tuples as lists."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _encode_classes(classes: np.ndarray) -> tuple[str, np.ndarray]:
    """(kind, array) storing ``classes`` exactly (:data:`CLASS_KINDS`); ValueError for labels that cannot be."""
    k = classes.dtype.kind
    if k in "biuf":
        return "numeric", classes
    if k == "U":
        return "string", classes
    if k in "Mm":
        return "datetime", classes
    if k == "O":
        pairs = []
        for v in classes.tolist():
            tag = ("numpy.str_" if isinstance(v, np.str_) else "str" if isinstance(v, str)
                   else "int" if type(v) is int else None)
            if tag is None:
                raise ValueError(f"classes_: the label {v!r} ({type(v).__name__}) cannot be saved; labels held as "
                                 "Python objects are saved when they are strings or integers")
            pairs.append([tag, str(v)])
        return "object", np.array(json.dumps(pairs))
    raise ValueError(f"classes_: labels of dtype {classes.dtype} cannot be saved; expected numbers, bool, strings, "
                     "datetime64 or timedelta64")


def _check_same_classes(path: str | Path, classes: np.ndarray, back: np.ndarray) -> None:
    """Refuse to save labels that would not come back unchanged (dtype, each label's type and value)."""
    if back.dtype != classes.dtype:
        raise ValueError(f"{path}: cannot save: the labels (dtype {classes.dtype}) would load as {back.dtype}; "
                         "nothing was written")
    for a, b in zip(classes.tolist(), back.tolist()):
        if type(a) is not type(b) or not a == b:
            raise ValueError(f"{path}: cannot save: the label {a!r} would load as {b!r}; nothing was written")


def rebuild_trainer(config_dict: dict[str, Any], n_features: int, n_classes: int,
                    arrays: dict[str, np.ndarray]) -> Trainer:
    from .trainer import Trainer

    config_dict = dict(config_dict)
    threads = config_dict.get("threads")
    if _is_int(threads) and threads > usable_cores():  # saved on a larger machine: this machine's cores
        config_dict["threads"] = usable_cores()
    config = TrainConfig.from_dict(config_dict)
    trainer = Trainer(config, n_features, n_classes)
    trainer.load_state_dict(arrays)
    return trainer
