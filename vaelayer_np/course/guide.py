"""The instructor's guide and the syllabus, as data: per lesson its goals, prerequisites and expected time,
and a grading rubric for each inline question (in the order the questions appear in the lesson).

The answer key of each question is the answer in the solution notebook (between the solution markers);
``docs/hooks/docs_site.py`` puts the two together on the site's Instructor's guide page and builds the
Syllabus page from the same data. ``tests/test_course.py`` checks that every inline question of every
lesson has a rubric, so a question added to a lesson without one fails the suite.

Each rubric is a list of ``(points, criterion)``; a question is worth the sum of its points.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# per lesson: title, goals, prerequisites, minutes (int), and per inline question its rubric, [(points, criterion)]
LESSONS: dict[str, dict[str, Any]] = {
    "01_vae_layer_forward": {
        "title": "The VAE layer's forward pass",
        "goals": ["write the encoder, the bounded log-variance, the reparameterised sample and the decoder",
                  "write the negative ELBO (MSE mean over N*D, KL summed over K and averaged over N)",
                  "explain why the noise must start small and why the log-variance is bounded smoothly",
                  "write the whole layer and its loss in every setting, with a BCE that never overflows"],
        "prerequisites": ["NumPy arrays, broadcasting and matrix products",
                          "the Gaussian distribution; the idea of an autoencoder"],
        "minutes": 100,
        "rubrics": [
            [(1, "the next layer receives mostly noise (about 95% of z's variance, as measured)"),
             (1, "its local loss then learns to encode noise; nothing from above can tell this layer to shrink "
                 "its noise (no gradient crosses layers)"),
             (1, "the small initial log-variance (b_lv = -4) or pass_on='mean' avoids it")],
            [(1, "unbounded, exp(r) overflows or the noise swamps z; a NaN then spreads"),
             (1, "tanh keeps a non-zero slope everywhere, a clip has slope 0 outside [-c, c] (stuck units)"),
             (1, "near 0 the bound is the identity")],
            [(1, "the reconstruction would not depend on sigma: only the KL acts on the log-variance"),
             (1, "sigma^2 would go to 1 while mu grows apart: a plain autoencoder with a meaningless variance")],
        ],
    },
    "02_deriving_gradients": {
        "title": "Deriving the gradients",
        "goals": ["derive and write every gradient of the VAE layer: MSE, stable BCE, KL, the sample, the bound, "
                  "decoder and encoder",
                  "apply the multivariate chain rule (a variable used twice sums its gradients)",
                  "derive the layer's whole backward pass in every setting (pass_on, BCE, evaluation, no bound) "
                  "without scaffolding, prove it with one's own gradient check, and train with it"],
        "prerequisites": ["lesson 01", "partial derivatives and the chain rule; the derivative of tanh and exp"],
        "minutes": 180,
        "rubrics": [
            [(1, "the derivative (e^v - 1)/2 is zero only at v = 0, i.e. sigma^2 = 1, the prior's variance"),
             (1, "alone the KL pulls every sigma^2 to 1 and mu to 0"),
             (1, "the reconstruction term, through the sample, keeps the noise small; beta sets the balance")],
            [(1, "names at least two hidden bugs (dout forgotten, rows mixed up, a transposed square gradient, "
                 "the wrong axis summed, another layer's dout)"),
             (1, "all-ones weights every output the same, so these bugs give the right numbers"),
             (1, "a random G weights each element differently: each bug changes the result by the order of the "
                 "gradient itself")],
            [(1, "through 1/2 * dz * eps * sigma: the gradient on z times the noise drawn"),
             (1, "its sign: noise that made the reconstruction worse lowers the log-variance"),
             (1, "on average (convex loss) it pushes the variance down; the KL balances it")],
        ],
    },
    "03_gradient_checking": {
        "title": "Gradient checking",
        "goals": ["write central differences, the relative error and a layer check with a random upstream gradient",
                  "explain rounding against truncation, float64's resolution and kinks",
                  "read the pass / FAIL / unresolved verdicts, and catch the KL log-variance bug",
                  "find the bug planted in a network with these tools, layer by layer"],
        "prerequisites": ["lesson 02", "Taylor series; floating-point numbers"],
        "minutes": 120,
        "rubrics": [
            [(1, "f(x+h) and f(x-h) are each rounded to about eps*|f|; their difference keeps that absolute error"),
             (1, "divided by 2h the rounding error grows like 1/h"),
             (1, "float32's eps (1e-7) makes the best error about 1e-6 to 1e-5: wrong gradients in the sixth "
                 "digit cannot be told from right ones")],
            [(1, "both planted bugs are still caught (errors of order 1)"),
             (1, "real bugs are often small (1e-6 to 1e-2): a tolerance of 1e-2 passes them"),
             (1, "the cause of a failing correct gradient (kinks, rounding) must be found, not hidden")],
            [(1, "the gradient of (1/2N) sum(v^2/2 - v), minimum at v = 1"),
             (1, "the value of the KL is right and beta is small: the loss still falls"),
             (1, "only a gradient check at a random point with a random upstream gradient shows it")],
            [(1, "float32 differences are only good to about 1e-3"),
             (1, "a tolerance loose enough for right float32 gradients also passes wrong ones"),
             (1, "the gradient is the same function in both precisions: check it once, in float64")],
            [(1, "layer 1, its input gradient dx: checked on its own only that tensor fails, its parameters pass"),
             (1, "a plausible bug of dx alone (rows out of step with the examples, a wrong factor or product on the "
                 "input path)"),
             (1, "in backprop layer 0's upstream gradient is layer 1's dx: one wrong dx makes every gradient below "
                 "it wrong, so an end-to-end failure locates nothing; check layer by layer")],
        ],
    },
    "04_forward_forward_and_iffcl": {
        "title": "Forward-forward and IFFCL",
        "goals": ["write the cosine embedding loss and its gradients, a balanced pairing and one local step",
                  "derive the gradient of the balanced all-pairs cosine loss as matrix products",
                  "explain twins, pairing modes and why the cosine acts on the signed latent",
                  "show locality bit for bit",
                  "design, run and analyse a small ablation of one part of the method"],
        "prerequisites": ["lessons 01-02", "the idea of contrastive learning"],
        "minutes": 150,
        "rubrics": [
            [(1, "a negative pair costs max(0, cos - m): pushed only while above m, free below"),
             (1, "m = 0.5 is reached quickly by most pairs, then the positives dominate"),
             (1, "m = 0 keeps up to 90% of the pairs pushing (and needs disjoint units on ReLU outputs)")],
            [(1, "identical twins with mirror pairing give cos ~ 1: no gradient, identical updates"),
             (1, "they stay identical: the contrastive term teaches nothing"),
             (1, "different initialisations give two views; same-class pairs of different examples put class "
                 "information in each layer")],
            [(1, "reaches layer k in both: its input (layer k-1's output, a constant) or the pairing"),
             (1, "only under backprop: the upstream gradient dout, the product of the Jacobians above")],
            # the experiment: graded on the reasoning, not on which factor was chosen or on the numbers obtained
            [(1, "a hypothesis stated before the run: one factor (lambda, margin, pairing or contrast, heads), the "
                 "expected direction of its effect and why"),
             (1, "a controlled design: at least three settings including the default, at least two seeds each, "
                 "every other setting and the epochs fixed"),
             (1, "a plot or table of every setting with its mean and its seed-to-seed spread, numbers quoted"),
             (2, "the conclusion weighs the effect against the spread between seeds (an effect inside the spread "
                 "is reported as no evidence, not as a finding) and says whether the hypothesis held"),
             (1, "the result is tied to what the part does in the method (e.g. lambda = 0: no label reaches the "
                 "VAE layers, each is a plain VAE; with local heads the results page finds lambda 0, 3 or 30 "
                 "within 0.4 points), and a next step is named")],
        ],
    },
    "05_training_and_what_goes_wrong": {
        "title": "Training, and what goes wrong",
        "goals": ["train IFFCL and backprop, read the per-layer local losses",
                  "write the KL per unit and the active units; diagnose posterior collapse",
                  "find which change of the recipe fixes the late-training decline",
                  "explain what a local classifier head (head_weight) adds to a layer and why the step stays local",
                  "write one layer's local step with its classifier head from the forward pass alone (a stable "
                  "softmax cross-entropy and its gradient, head_weight, where each gradient enters, nothing sent "
                  "below), prove it with one's own gradient check, and say what a gradient check cannot prove"],
        "prerequisites": ["lessons 01-04"],
        "minutes": 160,
        "rubrics": [
            [(1, "the posterior equals the prior for every input: the unit carries no information, KL -> 0"),
             (1, "the two numbers: the KL per unit (many below 0.05 nats) and the noise std against the spread "
                 "of the means"),
             (1, "Burda's test ignores the noise: a mean varying with std 0.1 under noise 1 counts as active")],
            [(1, "layer 1's loss does not depend on what it passes on: same KL, same collapsed units"),
             (1, "the layers above and the classifier get the clean (small) signal instead of noise"),
             (1, "the means keep shrinking under the KL: only beta or a stronger cosine term stops it")],
            [(1, "the reconstruction is a mean over D pixels, the KL a sum over K units"),
             (1, "what matters is beta * D: 0.78 for 784 pixels, 0.064 for 64")],
            [(1, "still local: head k reads only layer k's output, its gradient enters layer k as dout and stops at "
                 "the layer's input (need_dx=False); nothing crosses a layer boundary"),
             (1, "layer 0's update comes from its input, parameters, twin, pairing, noise and own head, fixed before "
                 "layer 1 runs: head 1 is none of these, so it is identical bit for bit"),
             (1, "what changed: the label reaches the layer's weights directly through the cross-entropy, not only "
                 "through the sign of a similarity with the twin; each layer is trained to be linearly decodable"),
             (1, "the layer is no longer label-free inside: a supervised local loss, like the 'pred' loss of "
                 "local-error-signal training (Nøkland & Eidnes 2019)")],
            [(1, "a gradient check compares the step's gradients with differences of the step's own loss: the summed "
                 "loss and its N-times gradients agree, so it passes (it proves consistency, not the intended loss)"),
             (1, "only a comparison of the loss with its definition catches it (the checker's comparison with the "
                 "library's step, where the factor N shows)"),
             (1, "in training the head's weight is multiplied by the batch size (32 at batch 32) against the negative "
                 "ELBO and the cosine term, and the balance changes with the batch size")],
        ],
    },
    "06_generation": {
        "title": "Generation",
        "goals": ["decode down the stack, sample from the aggregate posterior, traverse a latent unit",
                  "explain why prior samples are poor at small beta",
                  "derive the gradient through the decoders and invert them by descent"],
        "prerequisites": ["lessons 01, 02 and 05"],
        "minutes": 90,
        "rubrics": [
            [(1, "the errors of the decoders on the way down add up (and the deeper layers keep class, not detail)"),
             (1, "each decoder receives a reconstruction of act(z) where it was trained on z: ReLU loses the "
                 "negative coordinates"),
             (1, "the second disappears with the identity activation")],
            [(1, "only the KL pulls the aggregate posterior to N(0, I), and with beta = 1e-3 barely"),
             (1, "prior samples fall where the decoder saw no data"),
             (1, "a beta near 1 would fix sampling but collapse units and lose the class information")],
            [(1, "KL 0: mu = 0, sigma = 1 for every input, the unit is pure noise"),
             (1, "the decoder learns to ignore it: the traversal barely changes the image"),
             (1, "a deeper active unit changes its decoder's output, seen through the decoders below")],
        ],
    },
    "07_speed_and_kernels": {
        "title": "Speed and kernels",
        "goals": ["write fused Numba kernels checked in float64 and float32",
                  "count memory traffic to bound what fusion can gain",
                  "time honestly: warm-up, interleaving, medians, ratios",
                  "design and write IFFCL's layer pipeline on threads (one worker per layer, queues, a sentinel, "
                  "copies of reused outputs, exceptions handed to the caller), bit for bit the serial schedule, and "
                  "drive the library's own layers with it"],
        "prerequisites": ["lessons 01-02 and 04", "basic Numba (@njit) and the idea of a CPU cache",
                          "Python threads and queues (threading, queue)"],
        "minutes": 150,
        "rubrics": [
            [(1, "x > 0: 2 elements (read x, write the mask); dout * mask: 3"),
             (1, "5 against the kernel's 3: at most about 1.7x, a little less in bytes (1-byte mask)")],
            [(1, "a slow phase of the machine during one block hits only one function"),
             (1, "interleaved, it hits both about equally: the ratio survives"),
             (1, "the minimum is the luckiest call and hides costs every real call pays; the median is typical")],
            [(1, "its cost is the matrix products, which both backends give to BLAS"),
             (1, "the kernel fuses only the O(NM) element-wise part against O(NMK) for the products")],
            [(1, "determinism: a parallel sum's rounding depends on the number of threads"),
             (1, "small work per call: starting threads costs about what it saves; the cores serve BLAS or other "
                 "jobs")],
            [(1, "under backprop depth k's update on batch t needs the gradient coming down from the layers above on "
                 "that batch, computed with their current weights: the dependency runs up and down"),
             (1, "a pipeline must then wait for the backward pass (no overlap; exact only with micro-batches summed "
                 "into one update, as GPipe) or use gradients of older batches and weights changed since (stale "
                 "weights, delayed gradients): not the serial numbers"),
             (1, "in IFFCL the dependency runs only upward and depth k-1's output on batch t is fixed before its "
                 "update: nothing depth k uses is stale")],
            [(1, "the generator is one stream shared by the threads: the order of the draws would follow the threads' "
                 "timing (layer 0 on batch t+1 may draw before layer 1 on batch t), not the serial order"),
             (1, "so each layer gets other noise than in the serial step: other numbers, and different from run to "
                 "run (not reproducible from the seed)"),
             (1, "besides drawing the noise in advance: give each depth (or each batch and depth) a generator of "
                 "its own, seeded from the run's seed: reproducible from the seed, but no longer the serial step's "
                 "numbers")],
        ],
    },
    "08_capstone": {
        "title": "Capstone: IFFCL from your own code",
        "goals": ["assemble one's own functions into a VAE layer, a local step, a training step and epoch",
                  "train a three-layer stack on digits to 95% or more with one's own code",
                  "prove locality on one's own code",
                  "extend one's layer to BCE and one's local step to the balanced all-pairs term"],
        "prerequisites": ["lessons 01, 02, 04 (their exercises), 05 (a training epoch)"],
        "minutes": 120,
        "rubrics": [
            [(1, "layer 0's gradients come from its input, parameters, twin, targets and noise, fixed before "
                 "anything above runs"),
             (1, "backward receives no dout and sends no dx; the outputs passed up are constants"),
             (1, "it would fail if a gradient from above were sent down into layer 0 (that is backprop)")],
            [(1, "no: locality forbids information flowing down, not a layer depending on its input"),
             (1, "each layer is trained for its own loss: early layers keep more of the input, later ones more "
                 "class structure; a head reading all gets both")],
        ],
    },
}

_MARKER = re.compile(r"### BEGIN SOLUTION[^\n]*\n(.*?)### END SOLUTION", re.S)


def inline_questions(path: str | Path) -> list[tuple[str, str]]:
    """[(question, answer)] of a solution notebook, in order: the text before each answer and the answer."""
    nb = json.loads(Path(path).read_text())
    found: list[tuple[str, str]] = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        start = 0
        for m in _MARKER.finditer(text):
            before = text[start:m.start()]
            cut = max(before.rfind("**Inline question"), before.rfind("### Inline question"),
                      before.rfind("**Question"))
            question = before[cut:] if cut >= 0 else before
            question = re.sub(r"\*\*Answer\.?\*\*\s*$", "", question.strip()).strip()
            found.append((question, m.group(1).strip()))
            start = m.end()
    return found


def syllabus_markdown(lesson_paths: Iterable[str | Path]) -> str:
    """The Syllabus page: one row per lesson, with its goals, prerequisites and time."""
    rows = ["| lesson | goals | prerequisites | time |", "|---|---|---|---|"]
    total = 0
    for path in lesson_paths:
        info = LESSONS[Path(path).stem]
        total += info["minutes"]
        rows.append(f"| [{Path(path).stem[:2]} {info['title']}](lessons/{Path(path).stem}.ipynb) | "
                    + "; ".join(info["goals"]) + " | " + "; ".join(info["prerequisites"]) + f" | "
                    f"{info['minutes']} min |")
    return "\n".join(rows) + f"\n\nIn all about {total / 60:.0f} hours of work, exercises and questions included."


def instructors_markdown(lesson_paths: Iterable[str | Path]) -> str:
    """The Instructor's guide: per lesson its goals, prerequisites, time, and every inline question with its
    answer key and rubric."""
    out: list[str] = []
    for path in lesson_paths:
        stem = Path(path).stem
        info = LESSONS[stem]
        questions = inline_questions(path)
        out += [f"## {stem[:2]} {info['title']}", "",
                "**Learning goals.** " + "; ".join(info["goals"]) + ".", "",
                "**Prerequisites.** " + "; ".join(info["prerequisites"]) + ".", "",
                f"**Expected time.** about {info['minutes']} minutes (exercises, checkers and questions).", ""]
        for i, ((question, answer), rubric) in enumerate(zip(questions, info["rubrics"]), start=1):
            question = re.sub(r"^(\*\*|### )?(Inline question|Question) \d+\.?(\*\*)?\s*", "", question)
            points = sum(p for p, _ in rubric)
            out += [f"### {stem[:2]}, question {i}", "", f"*{' '.join(question.split())}*", "",
                    "**Answer key.**", "", answer, "",
                    f"**Rubric** ({points} points):", ""]
            out += [f"- {p} point{'s' if p > 1 else ''}: {criterion}" for p, criterion in rubric]
            out.append("")
    return "\n".join(out)
