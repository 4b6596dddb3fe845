"""``seq2seq`` tasks (encoder-decoders) through the CLI: a tiny random T5 with its own small
tokenizer (EOS appended as T5's is): the prompt as the encoder's input, the label word as the
decoder's labels, scoring by generation and perplexity on the target's tokens."""

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from adapterctl.cli import main
from adapterctl.data import IGNORE, Task, data_root
from adapterctl.run import lm
from adapterctl.run.build import lm_head, load_backbone
from adapterctl.run.paths import conf_dir
from clitools import metrics

DATA = data_root(None)
TASK = OmegaConf.load(conf_dir() / "task" / "rotten_tomatoes_seq2seq.yaml")
ROWS = [{"text": "a gripping , funny film", "label": 1}, {"text": "dull and far too long " * 30, "label": 0},
        {"text": "lovely", "label": 1}]


def make_tiny_t5(folder: Path) -> Path:
    """A 2-layer, d_model-32 ``T5ForConditionalGeneration`` and a byte-level BPE tokenizer of 400
    tokens learnt from rotten_tomatoes' first rows, ``<pad>``=0 and ``</s>``=1 as T5 has them."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    rows = (DATA / "rotten_tomatoes" / "train.jsonl").read_text().splitlines()[:300]
    texts = [json.loads(r)["text"] for r in rows] + ["sst2 sentence: negative positive"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False)
    bpe._tokenizer.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=True)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


@pytest.fixture(scope="module")
def tiny_model(tiny):
    model, tokenizer = load_backbone(str(tiny))
    model.active_head = lm_head(model, str(tiny), "seq2seq")
    return model.eval(), tokenizer


def test_prompt_is_the_encoders_and_the_target_the_decoders(tiny_model):
    model, tokenizer = tiny_model
    assert model.heads[model.active_head].config["head_type"] == "seq2seq_lm"
    task = Task(TASK, tokenizer, max_length=24)
    enc = task.encode(ROWS, "train")
    for row, feature, prompt in zip(ROWS, enc.features, enc.extra):
        assert feature["input_ids"] == prompt and len(prompt) <= 24 and prompt[-1] == tokenizer.eos_token_id
        target = tokenizer(task.label_names[row["label"]], add_special_tokens=False)["input_ids"]
        assert feature["labels"] == target + [tokenizer.eos_token_id]  # the loss covers the label word and EOS
    assert tokenizer.decode(enc.extra[1], skip_special_tokens=True).startswith("sst2 sentence: dull")
    batch = task.collator(left=True)(enc.features)  # labels padded to their own longest, inputs on the right
    assert batch["labels"].shape[1] == max(len(f["labels"]) for f in enc.features) < batch["input_ids"].shape[1]
    assert batch["attention_mask"][2, 0] == 1 and batch["input_ids"][2, -1] == tokenizer.pad_token_id


def test_scores_by_generation_and_perplexity_per_target_token(tiny_model):
    model, tokenizer = tiny_model
    task = Task(TASK, tokenizer, max_length=24)
    enc = task.encode(ROWS, "validation")
    texts = lm.generate_texts(model, task, enc, batch_size=3, desc=None)
    one_by_one = [lm.generate_texts(model, task, task.encode([r], "validation"), 1, desc=None)[0] for r in ROWS]
    assert texts == one_by_one  # padding changes no row's answer
    scores = lm.evaluate(model, task, enc, 3, ["accuracy", "exact_match", "perplexity"])
    assert scores["accuracy"] == sum(task.label_of(t) == r for t, r in zip(texts, enc.references)) / len(ROWS)
    assert scores["exact_match"] == sum(t.strip() == task.completions[r] for t, r in zip(texts, enc.references)) / 3
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for feature in enc.features:  # unpadded, one row at a time: every label token is scored (no shift)
            batch = {k: torch.tensor([v]) for k, v in feature.items()}
            n = sum(label != IGNORE for label in feature["labels"])
            nll, tokens = nll + float(model(**batch).loss) * n, tokens + n
    assert scores["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)


def test_train_evaluate_generate(tmp_path, monkeypatch, capsys, tiny):
    monkeypatch.chdir(tmp_path)
    args = [f"backbone.path={tiny}", "task=rotten_tomatoes_seq2seq", "adapter=lora", "trainer.max_steps=4",
            "trainer.batch_size=8", "trainer.max_train_samples=32", "trainer.max_eval_samples=8",
            "trainer.max_length=32", "trainer.lr=1e-2"]
    assert main(["train", *args, "output_dir=run"]) == 0
    m = metrics(tmp_path / "run")
    assert {"accuracy", "exact_match", "perplexity"} <= set(m) and m["main_metric"] == "accuracy"
    adapter = tmp_path / "run" / "adapters" / "rotten_tomatoes_seq2seq"
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    capsys.readouterr()
    assert main(["evaluate", "run=run"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again == {k: m[k] for k in ("accuracy", "exact_match", "perplexity")}
    assert main(["evaluate", f"backbone.path={tiny}", "task=rotten_tomatoes_seq2seq", "trainer.max_eval_samples=8",
                 "trainer.max_length=32"]) == 0  # zero-shot: the backbone alone
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["perplexity"] != again["perplexity"]
    assert main(["generate", f"backbone.path={tiny}", "run=run", "task=rotten_tomatoes_seq2seq", "prompt=dull",
                 "max_new_tokens=4", "stream=false"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["prompt"] == "dull" and isinstance(line["completion"], str)


def test_seq2seq_task_needs_an_encoder_decoder(tmp_path, monkeypatch, capsys):
    from clitools import make_tiny_bert

    monkeypatch.chdir(tmp_path)
    bert = make_tiny_bert(tmp_path / "bert")
    capsys.readouterr()
    assert main(["evaluate", f"backbone.path={bert}", "task=rotten_tomatoes_seq2seq"]) == 1
    err = capsys.readouterr().err.strip()
    assert "has no seq2seq_lm head" in err and len(err.splitlines()) == 1
