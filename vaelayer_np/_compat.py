"""Compatibility shims: the old module names, with the release that removes them.

Nothing else in the package keeps an old name. When :data:`REMOVED_IN` is released, this module goes, and
with it the old module names below; the old spellings of a few setting values (``pairing="labelled"``, ...)
are in :data:`vaelayer_np.core.settings.RENAMED`, and the IFFCL settings some functions took one keyword at
a time before they took one ``IFFCLSettings`` are read by :func:`vaelayer_np.core.settings.settings_from_keywords`
(the core imports nothing from here); they go in the same release.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

REMOVED_IN = "0.4.0"
"""The release that removes the shims (the same as :data:`vaelayer_np.core.settings.REMOVED_IN`, which the
core reads: the core imports nothing from here, and ``import vaelayer_np`` imports no NumPy)."""

PACKAGE = __name__.rpartition(".")[0]

# Where the modules of the 0.2 flat layout went. ``import vaelayer_np.layers`` still works (with a
# DeprecationWarning) and gives the very module object of its new place.
MOVED = {
    "_validate": "core._validate", "activations": "core.activations", "ops": "core.ops", "losses": "core.losses",
    "layers": "core.layers", "optim": "core.optim", "network": "core.network", "iffcl": "core.iffcl",
    "backprop": "core.backprop", "gradcheck": "core.gradcheck", "_kernels": "fast.kernels",
    "backend": "fast.backend", "config": "run.config", "data": "run.data", "tables": "run.tables",
    "checkpoint": "run.checkpoint", "runs": "run.runs", "trainer": "run.trainer", "run.cli": "cli",
    "plots": "run.plots", "estimator": "run.estimator", "threads": "fast.machine", "run.threads": "fast.machine",
    "diagnostics": "analysis.diagnostics", "generation": "analysis.generation", "reproduce": "tools.reproduce",
    "bench": "tools.bench", "course.release": "tools.release_course",
}



class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook: ``vaelayer_np.<old name>`` resolves to the module at its new place."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        prefix = PACKAGE + "."
        if fullname.startswith(prefix) and fullname[len(prefix):] in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        new = f"{PACKAGE}.{MOVED[spec.name[len(PACKAGE) + 1:]]}"
        warnings.warn(f"{spec.name} moved to {new}; the old name will be removed in release {REMOVED_IN}",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system has just set the module's __spec__ to the old name's: give it back its own
        module.__spec__ = self._own_spec


def install_moved_modules() -> None:
    """Put the import hook of :data:`MOVED` on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
