"""``python -m vaelayer_np`` runs the ``vaelayer`` command."""
import sys

from .cli import main

sys.exit(main())
