"""The adapter methods adapterctl ships; importing this package registers them
(``core/registry.py``). Each method is one folder: ``config.py``, ``layer.py``, ``model.py``."""

from . import bottleneck, lora, prefix_tuning, prompt_tuning, reft, union  # noqa: F401 - each registers itself
