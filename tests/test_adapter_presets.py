"""conf/adapter/: one file per preset, every field of its method's dataclass a typed key, and
the CLI trains any registered method."""

import dataclasses
import subprocess
import sys

import pytest
import yaml

from adapterctl.core.config import preset
from adapterctl.core.registry import method_for
from adapterctl.run import settings
from clitools import REPO, adapterctl, make_tiny_bert, quick
from conftest import DATA

PRESET_FILES = sorted(p for p in (REPO / "conf" / "adapter").glob("*.yaml") if p.stem != "none")


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_each_preset_file_lists_every_field_with_the_presets_value(path):
    data = yaml.safe_load(path.read_text())
    config = preset(data["preset"])
    fields = [f.name for f in dataclasses.fields(config)]
    assert [k for k in data if k not in ("defaults", "name", "preset", "lr")] == fields
    assert data["defaults"][0] == f"/schema/adapter/{method_for(config).name}@_here_"
    assert config.replace(**{k: data[k] for k in fields}) == config


def test_any_field_is_a_key_of_the_type_its_dataclass_says():
    cfg = settings.load("train", ["adapter=parallel", "adapter.original_ln_before=true", "adapter.scaling=2.0"])
    assert cfg.adapter.original_ln_before is True and cfg.adapter.scaling == 2.0
    assert list(settings.load("train", ["adapter=lora", "adapter.attn_matrices=[q,k,v]"]).adapter.attn_matrices) == [
        "q", "k", "v"]
    with pytest.raises(Exception, match=r"adapter.r='abc' is not a valid integer"):
        settings.load("train", ["adapter=lora", "adapter.r=abc"])


def test_configs_load_without_torch():
    """The CLI's --help and hub cards read configs; torch takes seconds to import."""
    code = ("import sys; from adapterctl.core.config import load_config, architecture_name; "
            "from adapterctl.run import schema; architecture_name(load_config('ia3')); "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_train_with_a_lora_preset_end_to_end(tmp_path, name):
    backbone = make_tiny_bert(tmp_path / "tiny")
    adapterctl("train", *quick(backbone, steps=3), f"data_root={DATA}", f"adapter={name}", "adapter.r=1",
               "output_dir=run", cwd=tmp_path)
    saved = yaml.safe_load((tmp_path / "run" / "adapters" / "rotten_tomatoes" / "adapter_config.json").read_text())
    assert saved["config"]["architecture"] == "lora" and saved["config"]["r"] == 1
    assert saved["config"]["composition_mode"] == ("scale" if name == "ia3" else "add")
    adapterctl("evaluate", "run=run", cwd=tmp_path)
