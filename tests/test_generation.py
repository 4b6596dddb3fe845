"""generate() with the compositions that make sense for it, on a decoder (left padding) and an
encoder-decoder of each layout: a single adapter and a Stack give the same tokens with the KV
cache as without it, and BatchSplit runs each prompt through its own adapter, as if generated
alone. (A fresh adapter gives the bare model's tokens: tests/test_families.py, every family.)"""

import pytest
import torch

from adapterctl import BatchSplit, Stack
from conftest import perturb
from test_families import causal_lm, prompts


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox", "t5", "bart"])
def test_generation_with_stack_and_batchsplit_keeps_its_tokens_with_the_kv_cache(family):
    model = causal_lm(family)
    model.add_adapter("a", "pfeiffer")
    model.add_adapter("b", "lora")
    perturb(model, ".a.", std=0.5, seed=1)
    perturb(model, ".b.", std=0.5, seed=2)
    batch = prompts(family)

    def generate(setup, rows=slice(None), use_cache=True):
        with torch.no_grad(), model.adapter_setup(setup, head="default"):
            return model.generate(batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows],
                                  max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0,
                                  use_cache=use_cache)  # no row stops early: lengths match alone and batched

    bare = generate(None)
    for setup in ("a", Stack("a", "b")):
        tokens = generate(setup)
        assert torch.equal(tokens, generate(setup, use_cache=False)), setup
        assert not torch.equal(tokens, bare), setup  # the adapters really act in generation
    split = generate(BatchSplit("a", "b", batch_sizes=[1, 1]))
    assert torch.equal(split[:1], generate("a", slice(0, 1)))
    assert torch.equal(split[1:], generate("b", slice(1, 2)))
