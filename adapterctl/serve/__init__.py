"""``adapterctl serve``: one frozen backbone, many adapters, mixed batches over HTTP.

``engine`` holds the model and its adapters and runs a mixed batch; ``batcher`` gathers rows
that arrive close together into one batch on the model's thread; ``app`` is the HTTP API;
``metrics`` its Prometheus counters; ``cli`` the command.
"""

from .app import create_app
from .engine import Engine

__all__ = ["create_app", "Engine"]
