"""Prompt tuning: AdapterHub's outputs and files on a tiny BERT, the mask grown with the prompt,
both ways of combining, the from_string init on the real MiniLM, freezing, counts and errors."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, BertConfig

from adapterctl import AdapterConfigError, AdapterModel, Parallel, Stack
from conftest import batch, tiny_llama, tiny_model
from test_prefix_tuning import close, run, stepwise  # the same helpers

METHODS = Path(__file__).parent / "fixtures" / "adapterhub_methods"


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_their_prompt_gives_their_outputs_on_the_unpadded_row(fmt):
    """AdapterHub 1.3 lets the prompt's positions attend to padding (it pads its 4-D mask with
    visible rows for them), so its padded row is not a reference; ours masks padding for every
    position (next test)."""
    ref = load_file(METHODS / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    model.load_adapter(METHODS / fmt / "prompt", set_active=True)
    out = run(model, {k: ref[k][:1] for k in ("input_ids", "attention_mask")})
    close(out.hidden_states, ref["prompt.hidden"][:1])  # 10 positions longer
    close(out.logits, ref["prompt.logits"][:1])  # the head reads position 0: the first prompt vector


@pytest.mark.parametrize("combine", ["prefix", "prefix_after_bos"])
def test_a_padded_row_gives_what_it_gives_alone_and_the_prompt_sits_where_combine_says(combine):
    model = tiny_model()
    model.add_adapter("p", "prompt_tuning", prompt_length=4, combine=combine, set_active=True)
    inputs = batch(rows=2, length=7)
    out = run(model, inputs).hidden_states
    assert out.shape == (2, 11, 32)
    keep = torch.cat([torch.ones(4, dtype=torch.bool), inputs["attention_mask"][1].bool()])
    if combine == "prefix_after_bos":
        keep = torch.cat([keep[4:5], keep[:4], keep[5:]])
    alone = run(model, {k: v[1:, inputs["attention_mask"][1].bool()] for k, v in inputs.items()}).hidden_states
    close(out[1, keep], alone[0])
    # the embedding module's output holds the prompt where combine says; it changes the outputs
    embedded = model.backbone.embeddings(input_ids=inputs["input_ids"])
    prompt = model.backbone.prompt_tuning.prompt_tunings["p"].prompt_embedding.weight
    at = 0 if combine == "prefix" else 1
    assert torch.equal(embedded[:, at:at + 4], prompt.expand(2, -1, -1))
    tokens = torch.ones(11, dtype=torch.bool)
    tokens[at:at + 4] = False
    with torch.no_grad(), model.adapter_setup(None):
        base = model(**inputs).hidden_states
    assert (out[0, tokens] - base[0]).abs().max() > 1e-3  # not an identity


def test_saved_under_adapterhubs_name_and_loaded_back_exactly(tmp_path):
    model = tiny_model()
    model.add_adapter("p", "prompt_tuning[prompt_length=3]", set_active=True)
    inputs = batch()
    before = run(model, inputs).hidden_states
    model.save_adapter(tmp_path / "p", "p")
    assert set(load_file(tmp_path / "p" / "adapter.safetensors")) == {
        "bert.prompt_tuning.prompt_tunings.p.prompt_embedding.weight"}
    fresh = tiny_model()
    fresh.load_adapter(tmp_path / "p", set_active=True)
    assert torch.equal(run(fresh, inputs).hidden_states, before)


def test_stacked_with_a_lora_and_trained_alone():
    model = tiny_model()
    model.add_adapter("p", "prompt_tuning[prompt_length=3]")
    model.add_adapter("l", "lora")
    model.add_head("p", "classification", num_labels=2)
    inputs = batch()
    assert run(model, inputs, Stack("l", "p")).hidden_states.shape[1] == 12  # the prompt runs wherever it is
    with pytest.raises(AdapterConfigError, match="prompt_tuning cannot run inside Parallel"):
        model.set_active_adapters(Parallel("p", "l"))
    model.add_adapter("q", "prompt_tuning[prompt_length=3]")
    with pytest.raises(AdapterConfigError, match="runs 2 prompt-tuning adapters .*a pass takes one"):
        run(model, inputs, Stack("p", "q"))
    model.train_adapter("p")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"bert.prompt_tuning.prompt_tunings.p.prompt_embedding.weight", "heads.p.1.weight",
                         "heads.p.1.bias", "heads.p.4.weight", "heads.p.4.bias"}
    model(**inputs, labels=torch.tensor([0, 1, 1])).loss.backward()
    assert model.backbone.prompt_tuning.prompt_tunings["p"].prompt_embedding.weight.grad.abs().sum() > 0


def test_from_string_starts_from_the_texts_token_embeddings(minilm):
    from transformers import AutoTokenizer

    model = AdapterModel.from_pretrained(minilm).eval()
    model.add_adapter("p", "prompt_tuning", prompt_init="from_string", prompt_init_text="great movie")
    ids = AutoTokenizer.from_pretrained(str(minilm))("great movie")["input_ids"]  # [CLS] great movie [SEP]
    ids = (ids * 3)[:10]
    words = model.backbone.get_input_embeddings()
    close(model.backbone.prompt_tuning.prompt_tunings["p"].prompt_embedding.weight, words(torch.tensor(ids)))


def test_parameter_count_on_bert_base_as_adapterhub_counts_it():
    with torch.device("meta"):
        model = AdapterModel(AutoModel.from_config(BertConfig()))
    model.add_adapter("p", "prompt_tuning")
    assert model.adapter_summary(as_dict=True)[0]["params"] == 7_680


def test_bad_prompt_configs_are_one_line_errors():
    with pytest.raises(AdapterConfigError, match="prompt_init='from_string' needs prompt_init_text"):
        tiny_model().add_adapter("p", "prompt_tuning", prompt_init="from_string")
    with pytest.raises(AdapterConfigError, match="unknown combine 'suffix'"):
        tiny_model().add_adapter("p", "prompt_tuning", combine="suffix")


def test_on_a_decoder_cached_steps_equal_the_full_forward_and_generation_with_and_without_a_cache():
    """The prompt enters the first pass and then lives in the KV cache; RoPE's positions count it;
    outputs have the sequence's positions only (AdapterHub offers no prompt tuning on decoders)."""
    model = tiny_llama(causal_lm=True)
    model.add_adapter("p", "prompt_tuning", prompt_length=4, combine="prefix_after_bos", set_active=True)
    ids = batch(rows=2, length=9)["input_ids"]
    full, steps, cache = stepwise(model, ids)
    with torch.no_grad():
        prompt = {k: v.flip(1) for k, v in batch(rows=2, length=6).items()}  # left padding
        tokens = [model.generate(**prompt, max_new_tokens=5, do_sample=False, use_cache=c, pad_token_id=1)
                  for c in (True, False)]
        with model.adapter_setup(None):
            bare = model(input_ids=ids).logits
    assert full.shape == (2, 9, 99)
    close(steps, full)
    assert cache.get_seq_length() == 9 + 4  # the cache holds the prompt
    assert torch.equal(tokens[0], tokens[1])
    assert (full - bare).abs().max() > 1e-3
