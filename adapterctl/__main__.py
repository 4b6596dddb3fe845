"""``python -m adapterctl`` (and ``accelerate launch -m adapterctl``, ``torchrun -m adapterctl``)."""

import sys

from .cli import main

sys.exit(main())
