"""What gives an exercise's answer away: its key expressions, per lesson and checker.

A student notebook must not hold any exercise's answer anywhere: a notebook is read as one page,
so a student who scrolls past an exercise must not find its answer below it either. No code that
computes it, no final formula of its derivation (the derivations stop one step before it), no
docstring or comment that states it, no library source printed. ``KEYS[lesson][checker]`` lists,
for the exercise that ``checker`` checks, the expressions that would give it away: code of the
solution and the final formula in the TeX of the text. :func:`find_leaks` reads every cell of a
notebook (code with its docstrings and comments, markdown, stored outputs) against the keys of
every exercise of every lesson (compared without whitespace), and every call that prints a
library function's source; ``tests/test_course_leaks.py`` runs it on every student notebook.

What a student may read only once an exercise is done (the library's own code, the classic slips
and what the checker says of them, a summary table of final formulas) is kept out of the
notebook's text: a cell calls :func:`reveal` with its name, and the text is printed only when the
checkers it requires have passed in the same kernel (every lesson's checker is :func:`recorded`).
The solution notebook runs the same cell after its own checkers passed, so its stored output
shows the text; the student notebook is stored without outputs.
"""
from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

KEYS = {
    "01_vae_layer_forward": {
        "check_bounded_log_var": ["c * np.tanh(r / c)", "np.tanh(r / c) * c"],
        "check_reparameterize": ["np.exp(0.5 * log_var) * eps", "np.exp(log_var / 2) * eps"],
        "check_vae_forward": ['h @ params["W_mu"]', 'z @ params["W_dec"]', 'x @ params["W_enc"]',
                              r"\log\sigma^2 = c\tanh((hW_{lv} + b_{lv})/c)"],
        "check_layer_forward": ["np.maximum(s, 0.0) - s * x + np.log1p(np.exp(-np.abs(s)))",
                                'act(z if (layer.pass_on == "sample" and eps is not None) else mu)'],
        "check_neg_elbo": ["np.mean((x_hat - x) ** 2)", "1 + log_var - mu ** 2 - np.exp(log_var)"],
    },
    "02_deriving_gradients": {
        "check_mse_backward": ["2.0 / diff.size", "2.0 * (x_hat - x) / x.size", "2 * (x_hat - x) / x.size",
                               r"\frac{2(\hat x_{nd} - x_{nd})}{ND}"],
        "check_bce_backward": ["(prob - target) / logits.size", r"\sigma(s) - t", r"\frac{e}{1+e}",
                               "e / (1.0 + e)", "sigmoid(s) - t", "sigmoid(logits) - target"],
        "check_kl_gradients": ["(var - 1) * (0.5 / n)", "(np.exp(log_var) - 1.0) / (2.0 * n)",
                               r"\frac{\sigma^2_{nk} - 1}{2N}", r"\frac{\mu_{nk}}{N}", r"\frac{\sigma^2 - 1}{2N}"],
        "check_latent_backward": ["0.5 * d_z * eps * std", r"\tfrac12\,\epsilon_{nk}\,\sigma_{nk}",
                                  r"1 - \left(\frac{v}{c}\right)^2", r"\bar r = \bar v \odot"],
        "check_decoder_backward": ["z.T @ d_x_hat", "d_x_hat @ W_dec.T", r"z^\top\bar{\hat x}",
                                   r"\bar{\hat x}\,W^\top", r"\sum_n z_{nk}\,\bar{\hat x}_{nd}"],
        "check_encoder_backward": ['d_mu @ params["W_mu"].T', "h.T @ d_mu", r"\bar W_\mu = h^\top\bar\mu",
                                   r"\bar h = \bar\mu\,W_\mu^\top + \bar r\,W_{lv}^\top"],
        "check_vae_layer_backward": ['dx = grads.pop("x") + d_target', 'd_target = -w * cache["x_hat"] / x.size',
                                     "dx = d_x_enc + weight * d_target", "d_target = -d_x_hat",
                                     'd_z = d_z + layer.act.backward(dout, cache["z"], cache["out"])'],
    },
    "03_gradient_checking": {
        "check_numerical_gradient": ["x[i] = old  #", "grad[i] = (f_plus - f_minus) / (2 * h)"],
        "check_relative_error": ["np.abs(numeric - analytic).max() / scale"],
        "check_locate_bug": ["errors = layer_gradient_errors(layer, h.copy(), rng)"],
        "check_layer_gradient_errors": ["errors[\"x\"] = relative_error(numerical_gradient(loss, x), dx)",
                                        "dout = rng.standard_normal(out.shape)"],
    },
    "04_forward_forward_and_iffcl": {
        "check_cosine_embedding": [r"\frac{b}{s} - \cos\,\frac{a}{\|a\|^2}", "(cos / sq_a)[:, None] * a",
                                   "b / norm[:, None]"],
        "check_cosine_matrix": ["g_scaled.T @ a", "(g * cos).sum(axis=0) * inv_b ** 2",
                                "(g * cos).sum(axis=1) * inv_a ** 2"],
        "check_make_pairs_balanced": ["np.flatnonzero(labels == labels[i])", "pool[rng.integers(pool.size)]"],
        "check_local_step": ["dz=lam * dz_a", "dz=lam * dz_b", "layer_a.backward(None, cache_a",
                             'cosine_embedding(cache_a["z"], cache_b["z"], target, margin)'],
    },
    "05_training_and_what_goes_wrong": {
        "check_backprop_epoch": ["optimizers[name].step(grads)", "loss_and_grads(net, x[idx], y[idx]"],
        "check_kl_per_unit": ["np.mean(1.0 + log_var - mu ** 2 - np.exp(log_var), axis=0)"],
        "check_active_units": ["np.var(mu, axis=0) > threshold"],
        "check_head_local_step": ["d_logits *= head_weight / n", 'd_out = d_logits @ head.params["W"].T',
                                  "layer.backward(d_out, cache, dz=d_z, need_dx=False)",
                                  'head_grads = {"W": out.T @ d_logits', "lambda: step(*args)[0]"],
    },
    "06_generation": {
        "check_decode_to_input": ["range(k, -1, -1)", "net.vae_layers[j].decode(h)"],
        "check_sample_aggregate": ["np.sqrt(mu.var(axis=0) + np.exp(log_var).mean(axis=0))"],
        "check_decode_gradient": ['d = d @ net.vae_layers[j].params["W_dec"].T', "d = d * image * (1.0 - image)"],
        "check_traverse": ["z[:, unit] = values"],
    },
    "07_speed_and_kernels": {
        "check_interleaved_timer": ["statistics.median(times_f)"],
        "check_relu_backward_kernel": ["flat_dout[i] if flat_x[i] > 0 else 0.0"],
        "check_kl_kernel": ["(s2 - 1.0) * (0.5 * inv_n)", "(var[i, j] - 1.0)", "d_log_var[i, j] ="],
        "check_adam_kernel": ["mi / (math.sqrt(vi) + eps_hat)", "m[i] / (math.sqrt(v[i]) + eps_hat)"],
        "check_layer_pipeline": ["out = copy.deepcopy(layer_steps[k](h, y))", "queues[k + 1].put((out, y))",
                                 "while (item := queues[n].get()) is not END"],
    },
    "08_capstone": {
        "check_my_vae_layer": ['decoder_backward(d_x_hat, cache["z"], p["W_dec"])', 'del grads["x"]',
                               'bce_with_logits_backward if self.recon == "bce" else mse_backward'],
        "check_my_local_step": ["layer_a.backward(cache_a, lam * dz_a)",
                                "cosine_matrix_loss if np.ndim(target) == 2 else cosine_embedding_loss"],
        "check_capstone_training": ["make_pairs_balanced(y, rng)",
                                    "target = np.where(y[:, None] == y[partner][None, :], 1.0, -1.0)",
                                    'model["opt"][name].step(g)',
                                    "grads, loss = step_gradients(model, x[idx], y[idx], rng)"],
        "check_capstone_locality": ["make_pairs_balanced(y, rng)"],
    },
}

# The checker module of each lesson (its FORBIDDEN lists name the library functions an exercise replaces).
CHECKER_MODULES = {
    "01_vae_layer_forward": "lesson01", "02_deriving_gradients": "lesson02", "03_gradient_checking": "lesson03",
    "04_forward_forward_and_iffcl": "lesson04", "05_training_and_what_goes_wrong": "lesson05",
    "06_generation": "lesson06", "07_speed_and_kernels": "lesson07", "08_capstone": "capstone",
}


def normalise(text: str) -> str:
    """Text without any whitespace: the comparison ignores layout."""
    return "".join(str(text).split())


# ----------------------------------------------------------------------------- the leak scanner
_SOURCE_PRINT = re.compile(r"(?<!def )\b(getsource|getsourcelines|show_source)\s*\(")


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)




def cell_texts(cell: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every text of one notebook cell, as ``(where, text)`` pairs: its source (code with its
    docstrings and comments, or markdown) and each stored output (stream text, and every text
    representation of a result or display: plain, HTML, Markdown, LaTeX, JSON; an error's traceback).
    Images are not read."""
    yield "source", _text(cell.get("source", ""))
    for j, out in enumerate(cell.get("outputs", []) or []):
        if "text" in out:
            yield f"output {j}", _text(out["text"])
        for mime, value in (out.get("data") or {}).items():
            if mime.startswith("text/") or mime.endswith("json") or mime == "application/javascript":
                yield f"output {j} ({mime})", value if isinstance(value, str) else _text(value) \
                    if isinstance(value, list) else json.dumps(value)
        if "traceback" in out:
            yield f"output {j} (traceback)", "\n".join(out["traceback"])
    for name, attachment in (cell.get("attachments") or {}).items():
        for mime, value in attachment.items():
            if mime.startswith("text/"):
                yield f"attachment {name}", _text(value)


def find_leaks(nb: dict[str, Any], keys: dict[str, dict[str, Sequence[str]]] | None = None) -> list[str]:
    """Where a notebook (a dict, as read from its JSON) gives an exercise's answer away.

    Every cell's source and outputs (:func:`cell_texts`) is compared, without whitespace, with every
    key expression of every exercise of every lesson (``keys``, default :data:`KEYS`); a call that
    prints a function's source (``inspect.getsource``, ``show_source``) is a leak too. Returns a
    list of sentences, one per finding, naming the cell, the part of it and the exercise.
    """
    chosen = KEYS if keys is None else keys
    flat_keys = [(lesson, checker, key, normalise(key)) for lesson, by_checker in chosen.items()
                 for checker, expressions in by_checker.items() for key in expressions]
    found: list[str] = []
    for i, cell in enumerate(nb.get("cells", [])):
        for where, text in cell_texts(cell):
            flat = normalise(text)
            for lesson, checker, key, norm in flat_keys:
                if norm and norm in flat:
                    found.append(f"cell {i} ({cell.get('cell_type')}, {where}): {key!r}, the answer of "
                                 f"{checker} ({lesson})")
            if where == "source" and cell.get("cell_type") == "code":
                for m in _SOURCE_PRINT.finditer(text):
                    line = text[:m.start()].count("\n") + 1
                    found.append(f"cell {i} (code, source line {line}): prints a function's source "
                                 f"({text.splitlines()[line - 1].strip()})")
    return found


# ----------------------------------------------------------------------------- what is shown once solved
_PASSED: set[str] = set()
_REVEALS: dict[str, tuple[tuple[str, ...], Callable[[], str], bool]] = {}


AUTOGRADE_ENV = "VAELAYER_COURSE_AUTOGRADE"


def recorded(check: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a checker so that its PASS is remembered in this Python process (for :func:`reveal`), and
    so that, when graded (the environment variable ``VAELAYER_COURSE_AUTOGRADE`` is ``1``, as for
    ``nbgrader autograde``), its FAIL raises ``AssertionError`` with the verdict and its diagnosis: the
    check cell is then an autograded test cell that fails.

    The checker runs isolated (:func:`vaelayer_np.course.checks.isolated`: a separate process with a
    time and a memory limit, where available)."""
    from .checks import isolated

    run = isolated(check)

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = run(*args, **kwargs)
        if bool(result):
            _PASSED.add(check.__name__)
        elif os.environ.get(AUTOGRADE_ENV) == "1":
            raise AssertionError(str(result))
        return result

    return wrapper


def register_reveal(name: str, requires: Iterable[str], text: Callable[[], str], markdown: bool = False) -> None:
    """Make ``reveal(name)`` show ``text()`` once every checker named in ``requires`` has passed
    (``markdown=True``: displayed as Markdown in a notebook, printed elsewhere)."""
    _REVEALS[name] = (tuple(requires), text, markdown)


def passed(*checkers: Any) -> bool:
    """True when every named checker has passed in this Python process."""
    return all(c in _PASSED for c in checkers)


def reveal(name: str) -> None:
    """Print what is kept for after an exercise (``name``, registered by the lesson's checker module),
    or, while a checker it requires has not passed in this kernel, which checkers to pass first."""
    if name not in _REVEALS:  # registered when a lesson's checker module is imported: import them all
        import importlib

        for module in CHECKER_MODULES.values():
            importlib.import_module(f"{__package__}.{module}")
    if name not in _REVEALS:
        raise ValueError(f"reveal: no text named {name!r}; known: {', '.join(sorted(_REVEALS))}")
    requires, text, markdown = _REVEALS[name]
    missing = [c for c in requires if c not in _PASSED]
    if missing:
        print(f"Hidden until {', '.join(missing)} pass{'es' if len(missing) == 1 else ''} in this kernel: "
              f"run the exercise's checker first, then this cell again.")
        return
    shown = text()
    if markdown:
        try:
            from IPython import get_ipython
            from IPython.display import Markdown, display
        except ImportError:
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            display(Markdown(shown))
            return
    print(shown)
