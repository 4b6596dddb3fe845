"""Where a run reports: a log file (and the console), ``metrics.csv``, TensorBoard events."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

LOG = logging.getLogger("adapterctl")


def log_to(path: Path | None, main: bool = True) -> None:
    """Send adapterctl's log to the console and, when given, to ``path`` (one per run). Under
    ``torchrun`` only the main process (``main``) reports; the others print errors only, and
    transformers' and accelerate's messages likewise."""
    LOG.setLevel(logging.INFO if main else logging.ERROR)
    if not main:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        logging.getLogger("accelerate").setLevel(logging.ERROR)
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

    def __init__(self, folder: Path, backends, enabled: bool = True, resume_step: int | None = None):
        """``resume_step``: a resumed run drops what was logged after its checkpoint, which it logs again."""
        self.csv_path = folder / "metrics.csv" if enabled and "csv" in backends else None
        self.tb = None
        if self.csv_path is not None and resume_step is not None and self.csv_path.exists():
            with self.csv_path.open(newline="") as f:
                rows = list(csv.reader(f))
            kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= resume_step]
            with self.csv_path.open("w", newline="") as f:
                csv.writer(f).writerows(kept)
        if enabled and "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self.tb = SummaryWriter(str(folder / "tb"), purge_step=purge)

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
