"""The capstone (notebooks/08_capstone.ipynb): the solution trains digits to 95% from the student's own functions,
the stubs fail with a clear message, and each checker diagnoses planted wrong answers."""
import json

import numpy as np
import pytest

from vaelayer_np.course import capstone
from vaelayer_np.tools.release_course import LESSONS, STUDENT

NOTEBOOK = "08_capstone.ipynb"


def _namespace(path):
    """Run the notebook's import and definition cells (no checker, no training) and return its namespace."""
    ns = {"__name__": "capstone_notebook"}
    for cell in json.loads(path.read_text())["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and (src.startswith("import") or "def " in src or "class " in src):
            exec(compile(src, str(path), "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def solution():
    return _namespace(LESSONS / NOTEBOOK)


@pytest.fixture(scope="module")
def student():
    return _namespace(STUDENT / NOTEBOOK)


@pytest.mark.slow  # 20 epochs of the student's own NumPy code: about 10 s
def test_the_solution_trains_digits_to_95_percent_from_its_own_functions(solution):
    result = capstone.check_capstone_training(solution["train_epoch"], solution["make_model"], solution["predict"])
    assert result.passed and result.figure >= 0.95, str(result)


def test_the_solution_passes_the_layer_step_and_locality_checkers(solution):
    assert capstone.check_my_vae_layer(solution["MyVAELayer"]).passed
    assert capstone.check_my_local_step(solution["my_local_step"], solution["MyVAELayer"]).passed
    result = capstone.check_capstone_locality(solution["step_gradients"], solution["make_model"])
    assert result.passed and result.figure == 0.0, str(result)


def test_the_student_stubs_fail_with_a_clear_message(student):
    for result in (capstone.check_capstone_training(student["train_epoch"], student["make_model"], student["predict"]),
                   capstone.check_my_vae_layer(student["MyVAELayer"]),
                   capstone.check_my_local_step(student["my_local_step"], student["MyVAELayer"]),
                   capstone.check_capstone_locality(student["step_gradients"], student["make_model"])):
        text = str(result)
        assert text.startswith("FAIL") and "not implemented yet" in text and "still raises NotImplementedError" in text
        assert "`" in text, text  # names the function that is still a stub


# ---------------------------------------------------------------- planted wrong answers
def _layer_variant(solution, forward=None, backward=None):
    base = solution["MyVAELayer"]
    namespace = {}
    if forward is not None:
        namespace["forward"] = forward
    if backward is not None:
        namespace["backward"] = backward
    return type("Planted", (base,), namespace)


def planted_layers(solution):
    base = solution["MyVAELayer"]

    def forward_library(self, x, eps):
        from vaelayer_np.core.layers import VAELayer
        layer = VAELayer(x.shape[1], self.latent_dim, encoder_hidden=self.params["W_enc"].shape[1])
        layer.params.update(self.params)
        out, cache = layer.forward(x, eps=eps)
        return out, cache

    def forward_in_place(self, x, eps):
        x -= x.mean(axis=0)  # centres the caller's input
        return base.forward(self, x, eps)

    def forward_float32(self, x, eps):
        out, cache = base.forward(self, x, eps)
        return out.astype(np.float32), cache

    def backward_without_dz(self, cache, dz):
        return base.backward(self, cache, 0 * dz)

    return [(_layer_variant(solution, forward=forward_library), "library", ["VAELayer.forward"]),
            (_layer_variant(solution, forward=forward_in_place), "in place", ["in place", "`x`"]),
            (_layer_variant(solution, forward=forward_float32), "float32", ["float32"]),
            (_layer_variant(solution, backward=backward_without_dz), "slip", ["MyVAELayer.backward", "wrong"])]


def test_the_layer_checker_diagnoses_planted_wrong_answers(solution):
    for layer_class, kind, words in planted_layers(solution):
        text = str(capstone.check_my_vae_layer(layer_class))
        assert text.startswith("FAIL") and all(w in text for w in words), (kind, text)


def test_the_local_step_checker_diagnoses_planted_wrong_answers(solution):
    step, layer = solution["my_local_step"], solution["MyVAELayer"]

    def swapped(*args):
        g_a, g_b, o_a, o_b = step(*args)
        return g_b, g_a, o_a, o_b

    def noise_order(layer_a, layer_b, x_a, x_b, target, rng, lam, margin):
        eps_b, eps_a = rng.standard_normal((x_a.shape[0], 4)), rng.standard_normal((x_a.shape[0], 4))
        swapped_rng = iter([eps_a, eps_b])

        class Fixed:
            def standard_normal(self, shape):
                return next(swapped_rng)

        return step(layer_a, layer_b, x_a, x_b, target, Fixed(), lam, margin)

    def library_cosine(layer_a, layer_b, x_a, x_b, target, rng, lam, margin):
        from vaelayer_np.core import ops
        ops.cosine_embedding(x_a, x_b, target, margin)
        return step(layer_a, layer_b, x_a, x_b, target, rng, lam, margin)

    def float32(*args):
        g_a, g_b, o_a, o_b = step(*args)
        return {k: v.astype(np.float32) for k, v in g_a.items()}, g_b, o_a, o_b

    def target_in_place(layer_a, layer_b, x_a, x_b, target, rng, lam, margin):
        target *= -1
        return step(layer_a, layer_b, x_a, x_b, -target, rng, lam, margin)

    for bug, words in ((swapped, ["twins' gradients swapped"]), (noise_order, ["eps_a drawn before eps_b"]),
                       (library_cosine, ["ops.cosine_embedding"]), (float32, ["float32"]),
                       (target_in_place, ["in place", "`target`"])):
        text = str(capstone.check_my_local_step(bug, layer))
        assert text.startswith("FAIL") and all(w in text for w in words), (bug.__name__, text)


def test_the_locality_checker_diagnoses_planted_wrong_answers(solution):
    step, make_model = solution["step_gradients"], solution["make_model"]

    def backprop_like(model, x, y, rng):
        grads, loss = step(model, x, y, rng)
        head = model["head_A"]["W"]  # a signal from the top leaks into layer 0: not local
        grads["A.vae0"] = {k: v + head.sum() for k, v in grads["A.vae0"].items()}
        return grads, loss

    def constant(model, x, y, rng):
        grads, loss = step(make_model(np.random.default_rng(0)), x, y, np.random.default_rng(0))
        return grads, loss

    def library_pairs(model, x, y, rng):
        from vaelayer_np.core import iffcl
        iffcl.make_pairs(y, "balanced", rng)
        return step(model, x, y, rng)

    def x_in_place(model, x, y, rng):
        x *= 0.5
        return step(model, x * 2.0, y, rng)

    for bug, words in ((backprop_like, ["measured", "expected 0"]), (constant, ["cannot fail"]),
                       (library_pairs, ["iffcl.make_pairs"]), (x_in_place, ["in place", "`x`"])):
        result = capstone.check_capstone_locality(bug, make_model)
        text = str(result)
        assert not result.passed and all(w in text for w in words), (bug.__name__, text)


def test_the_training_checker_refuses_the_library_and_an_in_place_shuffle(solution):
    train_epoch, make_model, predict = solution["train_epoch"], solution["make_model"], solution["predict"]

    def library_trainer(model, x, y, rng, batch_size):
        from vaelayer_np.core import iffcl
        iffcl.train_step(None, None, {}, x, y, rng)

    def shuffles_x(model, x, y, rng, batch_size):
        rng.shuffle(x)
        return train_epoch(model, x, y, rng, batch_size)

    for bug, words in ((library_trainer, ["iffcl.train_step"]), (shuffles_x, ["in place", "`x`"]),
                       (lambda *a: None, ["the epoch's mean loss", "got None"])):
        text = str(capstone.check_capstone_training(bug, make_model, predict, epochs=1))
        assert text.startswith("FAIL") and all(w in text for w in words), text


def test_the_training_checker_checks_the_process(solution):
    """No shuffle, the global generator, a loss that is not the epoch's: each named after one or two epochs."""
    train_epoch, make_model, predict = solution["train_epoch"], solution["make_model"], solution["predict"]
    step_gradients = solution["step_gradients"]

    def no_shuffle(model, x, y, rng, batch_size):
        losses = []
        for start in range(0, len(x), batch_size):
            grads, loss = step_gradients(model, x[start:start + batch_size], y[start:start + batch_size], rng)
            for name, g in grads.items():
                model["opt"][name].step(g)
            losses.append(loss)
        return float(np.mean(losses))

    def global_generator(model, x, y, rng, batch_size):
        np.random.permutation(len(x))  # the order drawn from np.random, not from rng  # noqa: NPY002
        return train_epoch(model, x, y, rng, batch_size)

    def constant_loss(model, x, y, rng, batch_size):
        train_epoch(model, x, y, rng, batch_size)
        return 1.0

    for bug, epochs, words in ((no_shuffle, 1, ["epoch 1 did not draw a new order", "rng.permutation"]),
                               (global_generator, 1, ["global generator", "`rng`"]),
                               (constant_loss, 2, ["same loss", "every epoch"])):
        text = str(capstone.check_capstone_training(bug, make_model, predict, epochs=epochs))
        assert text.startswith("FAIL") and all(w in text for w in words), (bug.__name__, text)


def test_the_layer_checker_names_the_slip(solution):
    base = solution["MyVAELayer"]

    def backward_mse_everywhere(self, cache, dz):
        recon, self.recon = self.recon, "mse"  # the MSE's gradient whatever the layer's loss
        try:
            return base.backward(self, cache, dz)
        finally:
            self.recon = recon

    def forward_sample_passed_on(self, x, eps):
        out, cache = base.forward(self, x, eps)
        return np.maximum(cache["z"], 0.0), cache

    def backward_dz_at_mu(self, cache, dz):
        grads = base.backward(self, cache, 0.0 * dz)
        h = cache["h"]  # dz added to the gradient of mu: only the mean head and what lies below it move
        extra = {"W_mu": h.T @ dz, "b_mu": dz.sum(axis=0)}
        d_h_pre = solution["relu_backward"](dz @ self.params["W_mu"].T, cache["h_pre"], h)
        extra.update(W_enc=cache["x"].T @ d_h_pre, b_enc=d_h_pre.sum(axis=0))
        return {k: v + extra.get(k, 0.0) for k, v in grads.items()}

    def backward_beta_missing(self, cache, dz):
        beta, self.beta = self.beta, 1.0
        try:
            return base.backward(self, cache, dz)
        finally:
            self.beta = beta

    class WithoutRecon(base):
        def __init__(self, in_dim, latent_dim, hidden, rng, beta=1e-3, bound=6.0, log_var_bias=-4.0):
            super().__init__(in_dim, latent_dim, hidden, rng, beta, bound, log_var_bias)

    for layer_class, words in (
            (_layer_variant(solution, backward=backward_mse_everywhere), ["(bce)", "wrong reconstruction loss"]),
            (_layer_variant(solution, forward=forward_sample_passed_on), ["forward", "`out`", "sample passed on"]),
            (_layer_variant(solution, backward=backward_dz_at_mu), ["`dz` added to the gradient of mu"]),
            (_layer_variant(solution, backward=backward_beta_missing), ["without beta"]),
            (WithoutRecon, ["recon='bce'", "constructor"])):
        text = str(capstone.check_my_vae_layer(layer_class))
        assert text.startswith("FAIL") and all(w in text for w in words), (layer_class.__name__, text)


def test_the_local_step_checker_tries_all_pairs_and_names_its_slips(solution):
    step, layer = solution["my_local_step"], solution["MyVAELayer"]
    cosine_matrix_loss = solution["cosine_matrix_loss"]

    def partner_only(layer_a, layer_b, x_a, x_b, target, rng, lam, margin):
        if np.ndim(target) == 2:  # the all-pairs targets read as one partner per row: the diagonal
            target = np.diag(target).copy()
        return step(layer_a, layer_b, x_a, x_b, target, rng, lam, margin)

    def plain_mean(layer_a, layer_b, x_a, x_b, target, rng, lam, margin):
        if np.ndim(target) == 2:
            solution["cosine_matrix_loss"] = lambda a, b, t, m: unbalanced(a, b, t, m)
        try:
            return step(layer_a, layer_b, x_a, x_b, target, rng, lam, margin)
        finally:
            solution["cosine_matrix_loss"] = cosine_matrix_loss

    def unbalanced(a, b, t, m):
        from vaelayer_np.course.lesson04 import reference_cosine_matrix
        return reference_cosine_matrix(a, b, t, m, slip="plain mean")

    def without_lambda(layer_a, layer_b, x_a, x_b, target, rng, lam, margin):
        return step(layer_a, layer_b, x_a, x_b, target, rng, 1.0, margin)

    for bug, words in ((partner_only, ["all pairs, target (N, N)", "wrong"]),
                       (plain_mean, ["all pairs", "plain mean over all pairs"]),
                       (without_lambda, ["lambda forgotten"])):
        text = str(capstone.check_my_local_step(bug, layer))
        assert text.startswith("FAIL") and all(w in text for w in words), (bug.__name__, text)


def test_the_checkers_accept_a_list_where_a_tuple_is_expected(solution):
    layer, step = solution["MyVAELayer"], solution["my_local_step"]

    class ListForward(layer):
        def forward(self, x, eps):
            return list(layer.forward(self, x, eps))

    assert capstone.check_my_vae_layer(ListForward).passed
    assert capstone.check_my_local_step(lambda *a: list(step(*a)), layer).passed
    result = capstone.check_capstone_locality(lambda *a: list(solution["step_gradients"](*a)), solution["make_model"])
    assert result.passed, str(result)
