"""Adapter configs: presets, the string form, dicts, files, validation and AdapterHub's hash."""

import json

import pytest

from adapterctl import AdapterConfigError, BnConfig, config_hash, load_config


def test_presets_match_adapterhub_defaults():
    pf, ho, par = load_config("pfeiffer"), load_config("houlsby"), load_config("parallel")
    assert (pf.mh_adapter, pf.output_adapter, pf.original_ln_before, pf.non_linearity, pf.reduction_factor) == (
        False, True, True, "relu", 16)
    assert (ho.mh_adapter, ho.output_adapter, ho.original_ln_before, ho.non_linearity) == (True, True, False, "swish")
    assert (par.is_parallel, par.scaling, par.reduction_factor, par.init_weights) == (True, 4.0, 2, "mam_adapter")
    assert load_config("seq_bn") == pf and load_config("double_seq_bn") == ho and load_config("par_bn") == par
    assert pf.init_weights == "identity"


def test_string_form_dict_object_and_file(tmp_path):
    c = load_config("pfeiffer[reduction_factor=8, non_linearity='gelu']")
    assert (c.reduction_factor, c.non_linearity) == (8, "gelu")
    assert load_config(c) is c
    assert load_config({"preset": "houlsby", "reduction_factor": 32}).reduction_factor == 32
    assert load_config(c.to_dict()) == c
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({"config": c.to_dict(), "name": "x"}))
    assert load_config(str(path)) == c
    assert load_config(tmp_path) == c  # a folder holding adapter_config.json
    assert load_config("houlsby", leave_out=[0, 1]).leave_out == (0, 1)


def test_per_layer_reduction_factor():
    c = load_config("pfeiffer", reduction_factor={"1": 8, "default": 16})
    assert c.bottleneck_size(768, 0) == 48 and c.bottleneck_size(768, 1) == 96
    with pytest.raises(AdapterConfigError, match="default"):
        load_config("pfeiffer", reduction_factor={"1": 8}).bottleneck_size(768, 0)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("pfeifer", "unknown adapter config 'pfeifer'; choose one of"),
        ("pfeiffer[reduction_factor=]", "malformed adapter config string"),
        ("pfeiffer[reduction_factor=8", "malformed adapter config string"),
        ("pfeiffer[8]", "malformed adapter config string"),
        ("pfeiffer[reduction_factor=0]", "reduction_factor must be a number > 0"),
        ("pfeiffer[reduction_factor=-4]", "reduction_factor must be a number > 0"),
        ("pfeiffer[colour=1]", "unknown adapter config field"),
        ("pfeiffer[non_linearity='relux']", "unknown non_linearity 'relux'"),
        ("pfeiffer[init_weights='xavier']", "unknown init_weights 'xavier'"),
        ({"mh_adapter": True}, "lacks output_adapter, reduction_factor, non_linearity"),
        ({"architecture": "mtl_lora"}, "architecture 'mtl_lora' is not supported; adapterctl supports"),
        ("lora[r=0]", "r must be an integer >= 1"),
        ("ia3[r=2]", "needs r=1 and dropout=0.0"),
        ({"architecture": "lora", "rank": 4}, "unknown adapter config field.s. rank for lora"),
        (3.5, "cannot read an adapter config from float"),
    ],
)
def test_bad_configs_name_the_problem_and_the_fix(spec, message):
    with pytest.raises(AdapterConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(spec)


def test_adapterhub_config_hash():
    # AdapterHub's index keys (its docs and index files): Pfeiffer and Houlsby at their defaults.
    assert config_hash(load_config("pfeiffer")) == "9076f36a74755ac4"
    assert config_hash(load_config("houlsby")) == "b1017368d7a97b11"
    assert config_hash(load_config("pfeiffer", reduction_factor=8)) != "9076f36a74755ac4"


def test_config_is_frozen():
    c = load_config("pfeiffer")
    with pytest.raises(Exception):
        c.reduction_factor = 2
    assert isinstance(c.replace(reduction_factor=2), BnConfig)


@pytest.mark.parametrize(
    "preset, overrides, message",
    [
        ("pfeiffer", {"reduction_factor": float("nan")}, "reduction_factor=nan is not a finite number"),
        ("pfeiffer", {"reduction_factor": {"default": float("inf")}}, "is not a finite number"),
        ("lora", {"alpha": float("-inf")}, "alpha=-inf is not a finite number; give a finite value, e.g. alpha=8"),
        ("pfeiffer", {"dropout": float("nan")}, "dropout=nan is not a finite number"),
        ("pfeiffer", {"non_linearity": 5}, "non_linearity=5 must be text"),
        ("pfeiffer", {"leave_out": ["x"]}, "leave_out=['x'] must be a list of integers, e.g. leave_out=[]"),
        ("lora", {"leave_out": ["x"]}, "lora config: leave_out=['x'] must be a list of integers"),
        ("pfeiffer", {"dropout": "0.1"}, "dropout='0.1' must be a number, e.g. dropout=0.0"),
        ("pfeiffer", {"mh_adapter": 1}, "mh_adapter=1 must be true or false"),
        ("lora", {"r": "8"}, "r='8' must be an integer, e.g. r=8"),
        ("lora", {"attn_matrices": ["q", 3]}, "attn_matrices=['q', 3] must be a list of names"),
        ("pfeiffer", {"reduction_factor": {"default": [16]}}, "must be a number or a mapping of layer -> number"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(preset, overrides, message):
    """NaN, infinity and wrong types in every field, whatever the method: one line, before the
    method's own checks could turn them into a traceback (``int('x')``, ``0.0 <= '0.1'``)."""
    with pytest.raises(AdapterConfigError, match=message.replace("[", r"\[").replace("(", r"\(")) as caught:
        load_config(preset, **overrides)
    assert "\n" not in str(caught.value)
    with pytest.raises(AdapterConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config({**load_config(preset).to_dict(), **overrides})  # a saved file's dict


def test_a_config_that_refers_to_itself_is_refused(tmp_path):
    own = tmp_path / "a" / "adapter_config.json"
    own.parent.mkdir()
    own.write_text(json.dumps({"config": str(own)}))  # AdapterHub's "config" may name another config
    via = tmp_path / "b.json"
    via.write_text(json.dumps({"config": str(own.parent)}))
    loop = {"preset": "pfeiffer"}
    loop["preset"] = loop
    nested = {"preset": "pfeiffer", "reduction_factor": {}}
    nested["reduction_factor"]["x"] = nested
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for spec, message in [(own.parent, "refers back to itself"), (via, "refers back to itself"),
                          (loop, r"refers back to itself \(a dict that contains itself\)"),
                          (nested, "must be a number or a mapping"), (deep, r"is not valid JSON \(nested too deep\)")]:
        with pytest.raises(AdapterConfigError, match=message):
            load_config(spec)


def test_an_absurdly_wide_bottleneck_is_refused_before_allocating():
    from conftest import tiny_model

    with pytest.raises(AdapterConfigError, match=r"reduction_factor=1e-09 asks for a bottleneck of .* over 16x"):
        load_config("pfeiffer", reduction_factor=1e-9).bottleneck_size(768, 0)
    assert load_config("pfeiffer", reduction_factor=1 / 16).bottleneck_size(768, 0) == 16 * 768  # the limit itself
    model = tiny_model()
    before = sum(p.numel() for p in model.parameters())
    with pytest.raises(AdapterConfigError, match="use reduction_factor >= 1/16"):
        model.add_adapter("a", "pfeiffer", reduction_factor=1e-9)
    assert not model.has_adapter("a") and sum(p.numel() for p in model.parameters()) == before
