"""Cards (schema, errors that name the field), identifiers, and resolution by backbone and
architecture, with errors that list the candidates."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from conftest import tiny_model
from hub_support import files_in, logits, make_run

from adapterctl import hub
from adapterctl.hub import index
from adapterctl.hub.card import architecture, parse_card, validate_card
from adapterctl.errors import CorruptFileError, IncompatibleAdapterError
from adapterctl.hub.errors import AmbiguousAdapterError, CardError, UnknownAdapterError
from adapterctl.hub.identifiers import HfIdentifier, Identifier, parse
from adapterctl.hub.publish import publish
from adapterctl.hub.export import export_run


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    """rotten_tomatoes@ukp for bert (pfeiffer and houlsby) and roberta (pfeiffer), sst2@ukp, rte@ai2."""
    base = tmp_path_factory.mktemp("hub")
    runs = [("rt_bert_pf", "pfeiffer", "bert", "rotten_tomatoes", "ukp"),
            ("rt_bert_ho", "houlsby", "bert", "rotten_tomatoes", "ukp"),
            ("rt_roberta_pf", "pfeiffer", "roberta", "rotten_tomatoes", "ukp"),
            ("sst", "pfeiffer", "bert", "sst2", "ukp"),
            ("rte", "pfeiffer", "bert", "rte", "ai2")]
    models = {}
    for name, preset, family, task, org in runs:
        run, models[name] = make_run(base / "runs" / name, name=name, preset=preset, family=family, task=task)
        publish(export_run(run, base / "exports" / name, org=org), base / "hub")
    return base / "hub", models


@pytest.fixture
def card(hub_root):
    [path] = (hub_root[0] / "adapters" / "ai2").glob("*.yaml")
    return yaml.safe_load(path.read_text())


def test_exported_card_has_every_field(card):
    assert card["type"] == "text_task" and (card["task"], card["subtask"], card["org"]) == ("nli", "rte", "ai2")
    assert card["backbone"] == {"model_type": "bert", "model_name": "tiny-bert", "hidden_size": 32}
    assert card["architecture"]["name"] == "pfeiffer"
    assert card["architecture"]["config_hash"] == "9076f36a74755ac4"
    assert card["architecture"]["config"]["reduction_factor"] == 16
    assert card["head"] == {"type": "classification", "labels": ["neg", "pos"]}
    assert card["metrics"] == {"accuracy": 0.81, "f1": 0.8}
    assert card["default_version"] == "1"
    [file] = card["files"]
    assert file["version"] == "1" and len(file["sha256"]) == 64 and file["size"] > 1000
    assert {"author", "description", "citation", "license", "dataset"} <= set(card)


def test_missing_and_mistyped_fields_are_named(card):
    bad = copy.deepcopy(card)
    del bad["license"], bad["backbone"]["hidden_size"]
    bad["files"][0]["sha256"] = "abc"
    bad["licence"] = "mit"
    with pytest.raises(CardError) as e:
        validate_card(bad, "my.yaml")
    message = str(e.value)
    for expected in ("my.yaml is not a valid Hub card", "license: required field is missing",
                     "backbone.hidden_size: required field is missing", "files[0].sha256: 'abc' does not match",
                     "licence: unknown field"):
        assert expected in message


def test_consistency_checks_a_schema_cannot_express(card):
    bad = copy.deepcopy(card)
    bad["architecture"]["config"]["reduction_factor"] = 8
    with pytest.raises(CardError, match="architecture.config_hash: 9076f36a74755ac4 does not match the config"):
        validate_card(bad)
    bad = copy.deepcopy(card)
    bad["default_version"] = "2"
    with pytest.raises(CardError, match=r"default_version: '2' is not among the files' versions \['1'\]"):
        validate_card(bad)
    with pytest.raises(CardError, match="not valid YAML"):
        parse_card("task: [unclosed")
    with pytest.raises(CardError, match=r"\(card\): \['a list'\] is not of type 'object'"):
        parse_card("- a list")


def test_an_invalid_card_stops_the_index_and_the_pull(hub_root, tmp_path):
    import shutil

    root = tmp_path / "hub"
    shutil.copytree(hub_root[0], root)
    [path] = (root / "adapters" / "ai2").glob("*.yaml")
    card = yaml.safe_load(path.read_text())
    del card["backbone"]
    path.write_text(yaml.safe_dump(card))
    before = (root / "index.json").read_text()
    with pytest.raises(CardError, match=r"1 invalid card\(s\):\n  .*ai2/.*\.yaml is not a valid Hub card: backbone: "
                                        "required field is missing"):
        index.build(root)
    assert (root / "index.json").read_text() == before
    (root / "index.json").unlink()  # an unindexed local hub is read card by card: the same refusal
    with pytest.raises(CardError, match="backbone: required field is missing"):
        hub.resolve("nli/rte@ai2", hubs=str(root), cache=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []


@pytest.mark.parametrize("text, expected", [
    ("sentiment/rotten_tomatoes@ukp", Identifier("rotten_tomatoes", "sentiment", "ukp")),
    ("rotten_tomatoes@ukp", Identifier("rotten_tomatoes", None, "ukp")),
    ("sentiment/sst-2@ukp:2", Identifier("sst-2", "sentiment", "ukp", "2")),
    ("rotten_tomatoes", Identifier("rotten_tomatoes")),
    ("hf:AdapterHub/bert-base-uncased-pf-sst2", HfIdentifier("AdapterHub/bert-base-uncased-pf-sst2")),
    ("hf:me/repo@v1.0", HfIdentifier("me/repo", "v1.0")),
    ("outputs/train/run/adapters/rt", None),
    ("../adapter", None),
    ("/abs/path", None),
    ("hf:me/repo@refs/pr/1", HfIdentifier("me/repo", "refs/pr/1")),
    ("hf:me/repo@../../../../etc", None),  # a revision names a cache folder: no '..'
    ("hf:me/repo@main/../../x", None),
    ("hf:me/repo@/abs", None),
])
def test_identifiers(text, expected):
    assert parse(text) == expected


def test_architecture_names_and_hashes():
    assert architecture("pfeiffer")["config_hash"] == "9076f36a74755ac4"
    assert architecture("houlsby")["config_hash"] == "b1017368d7a97b11"
    custom = architecture("pfeiffer[reduction_factor=8]")
    assert custom["name"] == "pfeiffer" and custom["config_hash"] != "9076f36a74755ac4"
    assert architecture("parallel")["name"] == "parallel"


def test_search_filters(hub_root):
    entries = hub.Hub(hub_root[0]).entries
    ids = lambda found: sorted((e.id, e.model_type, e.architecture) for e in found)  # noqa: E731
    assert ids(index.search(entries, task="sentiment", backbone="roberta")) == [
        ("sentiment/rotten_tomatoes@ukp", "roberta", "pfeiffer")]
    assert ids(index.search(entries, architecture="houlsby")) == [("sentiment/rotten_tomatoes@ukp", "bert", "houlsby")]
    assert ids(index.search(entries, architecture="b1017368d7a97b11")) == ids(index.search(entries, architecture="houlsby"))
    assert ids(index.search(entries, org="AI2")) == [("nli/rte@ai2", "bert", "pfeiffer")]
    assert len(index.search(entries, task="sentiment", backbone="bert")) == 3
    with pytest.raises(CardError, match="unknown search filter.*colour; use task, subtask"):
        index.search(entries, colour="red")


def test_ambiguous_identifier_lists_candidates_and_how_to_choose(hub_root, tmp_path):
    with pytest.raises(AmbiguousAdapterError) as e:
        hub.resolve("rotten_tomatoes@ukp", hubs=str(hub_root[0]), cache=tmp_path / "cache")
    message = str(e.value)
    assert "matches 3 adapters; choose one with backbone=... or arch=..." in message
    assert message.count("\n  sentiment/rotten_tomatoes@ukp  backbone=") == 3
    assert "arch=houlsby [b1017368d7a97b11]" in message and "(roberta, hidden 32)" in message
    assert files_in(tmp_path / "cache") == []


def test_resolution_by_backbone_and_architecture(hub_root, tmp_path):
    root, models = hub_root
    found = hub.find("rotten_tomatoes@ukp", str(root), model_type="roberta", hidden_size=32)
    assert (found.entry.model_type, found.entry.architecture) == ("roberta", "pfeiffer")
    found = hub.find("rotten_tomatoes@ukp", str(root), backbone="bert", config="houlsby")
    assert found.entry.config_hash == "b1017368d7a97b11"
    found = hub.find("rotten_tomatoes@ukp", str(root), backbone="bert", architecture="9076f36a74755ac4")
    assert found.entry.architecture == "pfeiffer"
    with pytest.raises(UnknownAdapterError, match=r"exists, but not for model_type=distilbert.*its candidates:\n") as e:
        hub.find("rotten_tomatoes@ukp", str(root), model_type="distilbert")
    assert isinstance(e.value, hub.WrongBackboneError) and isinstance(e.value, IncompatibleAdapterError)
    with pytest.raises(UnknownAdapterError, match="not for model_type=bert, version=9") as e:  # fits; no such version
        hub.find("rotten_tomatoes@ukp:9", str(root), model_type="bert")
    assert not isinstance(e.value, IncompatibleAdapterError)


def test_load_adapter_picks_the_adapter_that_fits_the_model(hub_root, tmp_path, monkeypatch):
    """``load_adapter(id)`` narrows by the model's backbone: the roberta model gets the roberta
    adapter although the identifier names three."""
    root, models = hub_root
    monkeypatch.setenv("ADAPTERCTL_HUB", str(root))
    monkeypatch.setenv("ADAPTERCTL_CACHE", str(tmp_path / "cache"))
    model = tiny_model("roberta")
    assert model.load_adapter("sentiment/rotten_tomatoes@ukp", set_active=True) == "rt_roberta_pf"
    assert torch.equal(logits(model, "rt_roberta_pf"), logits(models["rt_roberta_pf"], "rt_roberta_pf"))
    with pytest.raises(AmbiguousAdapterError, match="matches 2 adapters"):  # bert: pfeiffer and houlsby
        tiny_model("bert").load_adapter("sentiment/rotten_tomatoes@ukp")


def test_no_hub_configured_says_how_to_configure_one(monkeypatch):
    monkeypatch.delenv("ADAPTERCTL_HUB", raising=False)
    with pytest.raises(Exception, match="no hub configured; set ADAPTERCTL_HUB"):
        tiny_model().load_adapter("sentiment/rotten_tomatoes@ukp")
    with pytest.raises(Exception, match="neither an adapter folder nor a hub identifier"):
        tiny_model().load_adapter("outputs/train/missing/adapters/rt")


@pytest.mark.parametrize("field, value", [
    (("architecture", "name"), "../../../../tmp/evil"),
    (("org",), "ukp\n"),  # a JSON Schema pattern's $ would let the newline through
    (("task",), "a" * 41),
    (("backbone", "model_type"), "bert/../x"),
    (("default_version",), "1/../../x"),
])
def test_names_that_become_file_names_are_plain(card, field, value):
    bad = copy.deepcopy(card)
    parent = bad
    for key in field[:-1]:
        parent = parent[key]
    parent[field[-1]] = value
    if field == ("default_version",):
        bad["files"][0]["version"] = value
    with pytest.raises(CardError, match=rf"{'.'.join(field)}: .* (is not a plain name|does not match)"):
        validate_card(bad, "my.yaml")


def test_a_push_whose_card_names_a_path_writes_nothing(hub_root, tmp_path):
    run, _ = make_run(tmp_path / "run")
    export = export_run(run, tmp_path / "export", org="evil")
    card = yaml.safe_load((export / "card.yaml").read_text())
    card["architecture"]["name"] = "../../../../escaped"
    (export / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(CardError, match="architecture.name: '../../../../escaped' does not match"):
        publish(export, tmp_path / "hub")
    card["architecture"]["name"] = "pfeiffer"
    card["files"][0]["url"] = "../run/run.json"
    (export / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(CorruptFileError, match=r"the card's file url '../run/run.json' in .* is not a plain file"):
        publish(export, tmp_path / "hub")
    card["files"][0]["url"] = "rt.zip"
    (export / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(CardError, match="version '../2' is not a plain name"):
        publish(export, tmp_path / "hub", version="../2")
    assert not (tmp_path / "hub").exists() and not list(tmp_path.parent.glob("escaped*"))
