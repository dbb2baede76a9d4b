"""``vaelayer bench --quick --json``: one JSON object per configuration with the documented keys."""
import json
import math
import os
import subprocess
import sys

import pytest

KEYS = ("config", "step_ms", "products_ms", "parts_floor_ms", "torch_ms", "torch_fused_ms", "page_faults_per_step",
        "threads", "parallel_twins", "step_gflop", "epoch_tflop", "gemm_gflops_1", "gemm_gflops_all",
        "flop_limit_epoch_s", "epoch_s", "epoch_over_flop_limit")


@pytest.mark.slow
def test_bench_json_lines_have_the_keys_and_consistent_floors():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "vaelayer_np", "bench", "--quick", "--json", "--repeats", "2"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [r["config"] for r in rows] == ["linear-batch32", "linear-batch128", "hidden1024-batch32",
                                           "hidden1024-batch128"]
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    for row in rows:
        for key in KEYS:
            assert key in row, key
        for key in ("step_ms", "products_ms", "parts_floor_ms"):
            assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, key
        # the parts floor is the products plus Adam plus the noise, each measured alone
        assert row["parts_floor_ms"] == pytest.approx(row["products_ms"] + row["adam_ms"] + row["noise_ms"])
        assert row["page_faults_per_step"] >= 0
        # every product of the step is counted, the all-pairs cosine's three per layer pair included
        # (the mean and log-variance heads are one product each way: 43 and 61 rather than 55 and 79)
        assert row["n_products"] == (43 if row["encoder_hidden"] == 0 else 61)
        # the machine's limit: the configuration's epoch FLOPs over the large-SGEMM rate with every core
        assert row["threads"] == 1 and row["parallel_twins"] is False  # OPENBLAS_NUM_THREADS=1 above
        assert row["flop_limit_epoch_s"] == pytest.approx(row["epoch_tflop"] * 1e3 / row["gemm_gflops_all"])
        assert row["epoch_tflop"] == pytest.approx(row["step_gflop"] * 54000 / row["batch"] / 1e3)
        if row["config"] == "hidden1024-batch128":  # the defaults: the measured epoch, about 1.84 TFLOP
            assert row["epoch_s"] > 0 and 1.7 < row["epoch_tflop"] < 1.9
            assert row["epoch_over_flop_limit"] == pytest.approx(row["epoch_s"] / row["flop_limit_epoch_s"])
        else:
            assert row["epoch_s"] is None
        if have_torch:
            assert row["torch_ms"] > 0 and row["torch_fused_ms"] > 0
            assert row["torch_fused_kind"] in ("fused", "foreach")
        else:
            assert row["torch_ms"] is None and row["torch_fused_ms"] is None


def test_a_step_of_iffcl_holds_the_same_memory_at_any_depth_and_backprop_more_per_layer():
    """README and docs/performance.md: IFFCL's peak memory in a step stays flat with depth (a layer's cache is
    dropped once the layer is updated), backprop's grows (every cache lives until the backward pass reaches it).
    Allocation sizes, not timings: the same on any machine."""
    from vaelayer_np.tools.bench import step_memory

    small = dict(batch=32, hidden=64, width=32)
    iffcl = [step_memory(depth, "iffcl", **small) for depth in (3, 8)]
    backprop = [step_memory(depth, "backprop", **small) for depth in (3, 8)]
    per_layer = (backprop[1] - backprop[0]) / 5  # what backprop holds for each layer it adds
    assert per_layer > 32 * 32 * 4 * 4, backprop  # several (batch x width) float32 arrays per layer
    assert abs(iffcl[1] - iffcl[0]) < 0.1 * per_layer, iffcl  # IFFCL: flat
