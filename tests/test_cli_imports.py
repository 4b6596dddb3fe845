"""The command itself answers fast: ``--help``, ``--version``, ``recipes``, ``--cfg`` and config
errors compose and check the config without importing torch, transformers or accelerate."""

import subprocess
import sys

from clitools import REPO

CALLS = [["--help"], ["--version"], ["recipes"], ["train", "--help"], ["fuse", "--help"], ["train", "--cfg", "job"],
         ["train", "--info"], ["train", "seed=abc"], ["train", "trainer.scheduler=cosinus"], ["fuse"],
         ["train", "--max_steps", "5"], ["train", "-m", "adapter=pfeiffer,housby"], ["predict", "text=hi"]]
PROBE = f"""
import sys
from adapterctl.cli import main
codes = [main(argv) for argv in {CALLS!r}]
print("CODES", codes)
print("HEAVY", sorted(m for m in ("torch", "transformers", "accelerate", "datasets") if m in sys.modules))
"""


def test_help_and_config_errors_do_not_import_torch(tmp_path):
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    lines = proc.stdout.splitlines()
    assert lines[-2] == "CODES [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]", proc.stderr[-2000:]
    assert lines[-1] == "HEAVY []"
    assert "Traceback" not in proc.stderr
