"""Where a run reports: a log file (and the console), ``metrics.csv``, TensorBoard events."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

LOG = logging.getLogger("adapterctl")


def log_to(path: Path | None) -> None:
    """Send adapterctl's log to the console and, when given, to ``path`` (one per run)."""
    LOG.setLevel(logging.INFO)
    for handler in list(LOG.handlers):
        LOG.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    LOG.addHandler(console)
    if path is not None:
        file = logging.FileHandler(path)
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        LOG.addHandler(file)
    LOG.propagate = False


class Trackers:
    """The backends named in ``logger.backends`` (csv, tensorboard); a no-op off the main process."""

    def __init__(self, folder: Path, backends, enabled: bool = True):
        self.csv_path = folder / "metrics.csv" if enabled and "csv" in backends else None
        self.tb = None
        if enabled and "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(folder / "tb"))

    def log(self, step: int, values: dict) -> None:
        if self.csv_path is not None:
            new = not self.csv_path.exists()
            with self.csv_path.open("a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(["step", "name", "value"])
                writer.writerows([step, k, v] for k, v in values.items())
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
