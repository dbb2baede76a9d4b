"""What a checkpoint must hold to resume a :class:`~vaelayer_np.run.trainer.Trainer`, every entry checked.

A checkpoint records the settings it was made with (entry ``trainer.config``):
:func:`check_resume_config` refuses one whose settings differ from the trainer's in anything
but :data:`~vaelayer_np.run.config.RESUME_MAY_CHANGE`. :func:`check_trainer_state` checks every
other entry (counters, epoch order, generator state, parameters, optimiser moments: shape,
dtype, finite values) against the trainer it would be loaded into, naming the entry that is
wrong, before anything is changed.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import CheckpointError
from .config import RESUME_MAY_CHANGE, TrainConfig


def _config_json(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


def check_resume_config(config: TrainConfig, saved: Any) -> None:
    """Refuse to continue with ``config`` a checkpoint made with the settings ``saved``.

    Parameters
    ----------
    config : TrainConfig, the settings that would continue the run
    saved : dict, the settings stored in the checkpoint (entry ``trainer.config``)

    Raises CheckpointError (a ValueError) naming the first setting that differs (other
    than those in :data:`RESUME_MAY_CHANGE`).
    """
    if not isinstance(saved, dict):
        raise CheckpointError("checkpoint: entry 'trainer.config' is not a JSON object of settings; the file is "
                              "corrupt")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise CheckpointError(f"checkpoint: entry 'trainer.config' has settings this version does not know "
                              f"({', '.join(unknown)}); it was written by another version of vaelayer_np")
    try:  # settings added after the checkpoint was written take their defaults
        saved = TrainConfig.from_dict(saved).to_dict()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint: entry 'trainer.config' is not a configuration ({exc})") from None
    now = config.to_dict()
    for name in sorted(set(now) - RESUME_MAY_CHANGE):  # the settings a config writes (not the old backend)
        if now[name] != saved[name]:
            raise CheckpointError(f"{name}: config.json says {name}={now[name]!r} but the checkpoint was made with "
                                  f"{name}={saved[name]!r}; a resumed run keeps its settings (only "
                                  f"{', '.join(sorted(RESUME_MAY_CHANGE & known))} may change): restore config.json "
                                  "or start a new run")


def _scalar_int(state: dict[str, Any], key: str, minimum: int = 0) -> int:
    """An integer counter entry of a checkpoint: a 0-d integer array >= minimum."""
    value = _entry(state, key)
    if value.shape != () or value.dtype.kind not in "iu":
        raise ValueError(f"checkpoint: entry {key!r} must be one integer, got dtype {value.dtype} shape {value.shape}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"checkpoint: entry {key!r} is {v}, expected an integer >= {minimum}")
    return v


def _entry(state: dict[str, Any], key: str) -> np.ndarray:
    if key not in state:
        raise ValueError(f"checkpoint: missing entry {key!r}; the file is not a checkpoint of this run's "
                         "configuration")
    value = state[key]
    if not isinstance(value, np.ndarray):
        raise ValueError(f"checkpoint: entry {key!r} is a {type(value).__name__}, expected a numpy array")
    return value


def _json_entry(state: dict[str, Any], key: str) -> Any:
    value = _entry(state, key)
    if value.shape != () or value.dtype.kind != "U":
        raise ValueError(f"checkpoint: entry {key!r} must be one JSON string, got dtype {value.dtype} "
                         f"shape {value.shape}")
    try:
        return json.loads(str(value))
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint: entry {key!r} is not valid JSON ({exc.msg})") from None


def _check_array_entry(state: dict[str, Any], key: str, like: np.ndarray, nonnegative: bool = False) -> np.ndarray:
    """A parameter-like entry: same shape and dtype as ``like``, finite (and >= 0 if asked)."""
    value = _entry(state, key)
    if value.shape != like.shape:
        raise ValueError(f"checkpoint: entry {key!r} has shape {value.shape}, the model expects {like.shape}")
    if value.dtype != like.dtype:
        raise ValueError(f"checkpoint: entry {key!r} has dtype {value.dtype}, the model expects {like.dtype}")
    if not np.isfinite(value).all():
        raise ValueError(f"checkpoint: entry {key!r} contains NaN or inf")
    if nonnegative and (value < 0).any():
        raise ValueError(f"checkpoint: entry {key!r} has negative values; a second moment is never negative")
    return value


@dataclass
class TrainerState:
    """The checked counters of a checkpoint (the arrays stay in the state dict they came from)."""

    epoch: int
    batch_index: int
    epoch_order: np.ndarray | None
    epoch_sums: dict
    rng_state: dict


def check_trainer_state(trainer: Any, state: dict[str, Any]) -> TrainerState:  # a Trainer (which imports us)
    """Check a state written by ``Trainer.state_dict`` against ``trainer``; return its counters.

    The settings the checkpoint was made with (``trainer.config``, see :func:`check_resume_config`),
    the counters (integers, not negative, consistent), the epoch order (a permutation), the generator
    state, and every parameter and optimiser moment (shape, dtype, finite values, compared with the
    arrays they will be copied into). Anything wrong raises ValueError naming the entry.
    """
    if not isinstance(state, dict):
        raise ValueError(f"state: expected a dict of arrays, got {type(state).__name__}")
    check_resume_config(trainer.config, _json_entry(state, "trainer.config"))
    epoch = _scalar_int(state, "trainer.epoch")
    batch_index = _scalar_int(state, "trainer.batch_index")
    order = _entry(state, "trainer.epoch_order")
    if order.ndim != 1 or order.dtype.kind not in "iu":
        raise ValueError(f"checkpoint: entry 'trainer.epoch_order' must be a 1-d integer array, got dtype "
                         f"{order.dtype} shape {order.shape}")
    if order.size and not np.array_equal(np.sort(order), np.arange(order.size)):
        raise ValueError("checkpoint: entry 'trainer.epoch_order' is not a permutation of 0..N-1")
    if order.size == 0 and batch_index != 0:
        raise ValueError(f"checkpoint: entry 'trainer.batch_index' is {batch_index} between two epochs "
                         "(empty 'trainer.epoch_order'), expected 0")
    if order.size and batch_index >= trainer.n_batches(order.size):
        raise ValueError(f"checkpoint: entry 'trainer.batch_index' is {batch_index}, but an epoch of "
                         f"{order.size} examples has only {trainer.n_batches(order.size)} batches")
    sums = _json_entry(state, "trainer.epoch_sums")
    if not isinstance(sums, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in sums.values()):
        raise ValueError("checkpoint: entry 'trainer.epoch_sums' must map names to finite numbers")
    rng_state = _json_entry(state, "trainer.rng")
    try:
        np.random.default_rng().bit_generator.state = rng_state
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"checkpoint: entry 'trainer.rng' is not a random generator state ({exc!r})") from None
    for name, net in trainer.nets.items():
        for key, value in net.state_dict(prefix=f"net{name}.").items():
            _check_array_entry(state, key, value)
    steps = None
    for name, opt in trainer.optimizers.items():
        for key, value in opt.state_dict().items():
            full = f"opt.{name}.{key}"
            if key == "t":
                t = _scalar_int(state, full)
                if steps is not None and t != steps[1]:
                    raise ValueError(f"checkpoint: entry {full!r} is {t} but {steps[0]!r} is {steps[1]}; every "
                                     "optimiser makes one step per batch")
                steps = steps or (full, t)
            else:
                _check_array_entry(state, full, value, nonnegative=key.startswith("v."))
    if steps is not None and steps[1] < epoch + batch_index:
        raise ValueError(f"checkpoint: entry {steps[0]!r} is {steps[1]}, fewer than the {epoch} epochs and "
                         f"{batch_index} steps done")
    return TrainerState(epoch, batch_index, None if order.size == 0 else np.array(order, dtype=np.int64),
                        {k: float(v) for k, v in sums.items()}, rng_state)
