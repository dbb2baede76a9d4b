"""``python -m vaelayer_np.tools.reproduce --child NAME SEED OUT [EPOCHS LIMIT]``: the per-seed worker
that ``vaelayer reproduce`` starts."""
import sys

from .runner import _child_main

if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2:]))
    sys.exit("run the experiments with `vaelayer reproduce` (or `python -m vaelayer_np reproduce`); "
             "`python -m vaelayer_np.tools.reproduce --child ...` is the per-seed worker it starts")
