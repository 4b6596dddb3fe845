"""The real MiniLM and real data: a pfeiffer adapter learns rotten_tomatoes (a short run, not the benchmark)."""

import json
import random

import pytest
import torch
from transformers import AutoTokenizer

from adapterctl import AdapterModel
from conftest import DATA


def read(split, n, seed):
    rows = [json.loads(line) for line in (DATA / "rotten_tomatoes" / f"{split}.jsonl").open()]
    random.Random(seed).shuffle(rows)  # the file lists all positives, then all negatives
    return rows[:n]


@pytest.mark.real
def test_pfeiffer_adapter_beats_chance_on_rotten_tomatoes(minilm):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    model = AdapterModel.from_pretrained(minilm)
    model.add_adapter("rt", "pfeiffer")
    model.add_head("rt", num_labels=2, id2label=["neg", "pos"])
    model.train_adapter("rt")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert 0 < sum(p.numel() for p in trainable) < 0.02 * sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=2e-3)

    def encode(rows):
        enc = tokenizer([r["text"] for r in rows], padding=True, truncation=True, max_length=48, return_tensors="pt")
        return enc, torch.tensor([r["label"] for r in rows])

    train = read("train", 16 * 150, seed=0)
    for i in range(0, len(train), 16):
        enc, labels = encode(train[i:i + 16])
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    model.eval()
    correct = 0
    validation = read("validation", 256, seed=1)
    with torch.no_grad():
        for i in range(0, len(validation), 64):
            enc, labels = encode(validation[i:i + 64])
            correct += (model(**enc).logits.argmax(-1) == labels).sum().item()
    accuracy = correct / len(validation)
    print(f"validation accuracy after 150 steps: {accuracy:.3f}")
    assert accuracy >= 0.68  # chance is 0.5; 256 examples put chance 5 standard deviations below
