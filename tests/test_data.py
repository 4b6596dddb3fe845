"""Tasks: loading rows, tokenizing the four task shapes, and the errors on bad data."""

import json

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from adapterctl.data import IGNORE, DataError, Task, data_root, load_rows, read_inputs
from adapterctl.run.build import backbone_path
from clitools import MINILM, REPO


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(backbone_path(MINILM))


def task_cfg(name):
    return OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml")


def test_local_rows_come_first_and_match_the_config():
    root = data_root(None)
    rows = load_rows(task_cfg("mrpc"), root, "validation")
    assert len(rows) == 408 and set(rows[0]) >= {"sentence1", "sentence2", "label"}
    meta = json.loads((root / "mrpc" / "meta.json").read_text())
    assert meta["label_names"] == list(task_cfg("mrpc").label_names)


def test_every_local_task_config_names_the_shipped_labels():
    root = data_root(None)
    for meta_path in root.glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        assert list(task_cfg(meta_path.parent.name).label_names) == meta["label_names"], meta_path


def test_no_local_copy_offline_says_how_to_point_at_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"no local data for task 'qqp'.*'glue/qqp'.*ADAPTERCTL_DATA"):
        load_rows(task_cfg("qqp"), tmp_path, "train")


def test_pairs_tokenize_together_with_dynamic_padding(tokenizer):
    task = Task(task_cfg("rte"), tokenizer, max_length=32)
    rows = [{"sentence1": "A cat sat.", "sentence2": "A cat is sitting.", "label": 0},
            {"sentence1": "Dogs bark loudly at night in the city.", "sentence2": "Dogs are quiet.", "label": 1}]
    enc = task.encode(rows, "train")
    assert enc.references == [0, 1]
    assert max(enc.features[0]["token_type_ids"]) == 1  # the second sentence is segment 1
    batch = task.collator()(enc.features)
    assert batch["input_ids"].shape == (2, max(len(f["input_ids"]) for f in enc.features))
    assert batch["labels"].tolist() == [0, 1]


def test_tagging_labels_sit_on_the_first_word_piece(tokenizer):
    task = Task(task_cfg("conll2003"), tokenizer, max_length=32)
    rows = [{"tokens": ["Washington", "embraces", "Kowalczyk"], "ner_tags": [5, 0, 1]}]
    enc = task.encode(rows, "train")
    feature = enc.features[0]
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    labelled = [(p, lab) for p, lab in zip(pieces, feature["labels"]) if lab != IGNORE]
    assert [lab for _, lab in labelled] == [5, 0, 1]
    assert all(not p.startswith("##") for p, _ in labelled)
    assert len(pieces) > 5  # the rare words split, and their inner pieces are ignored
    assert enc.references == [["B-LOC", "O", "B-PER"]]


def test_qa_answer_span_maps_to_tokens_and_back(tokenizer):
    task = Task(task_cfg("squad"), tokenizer, max_length=64)
    context = "The tower was built in 1889 by Gustave Eiffel."
    rows = [{"question": "When was it built?", "context": context,
             "answers": {"text": ["1889"], "answer_start": [context.index("1889")]}}]
    enc = task.encode(rows, "train")
    f = enc.features[0]
    start, end = f["start_positions"], f["end_positions"]
    assert tokenizer.decode(f["input_ids"][start:end + 1]) == "1889"
    n = len(f["input_ids"])
    start_logits, end_logits = [0.0] * n, [0.0] * n
    start_logits[start], end_logits[end] = 5.0, 5.0
    assert task.decode([(start_logits, end_logits)], enc) == ["1889"]


@pytest.mark.parametrize("row, message", [
    ({"text": "fine", "label": 2}, r"label 2, outside 0\.\.1"),
    ({"text": "fine", "label": "great"}, r"label 'great', outside"),
    ({"text": "fine", "stars": 1}, r"no column 'label'.*task\.label_column"),
    ({"review": "fine", "label": 1}, r"no column 'text'.*task\.text_columns"),
])
def test_bad_labels_and_columns_name_the_fix(tokenizer, row, message):
    task = Task(task_cfg("rotten_tomatoes"), tokenizer, max_length=16)
    with pytest.raises(DataError, match=message):
        task.encode([{"text": "ok", "label": 0}, row] if "text" in row and "label" in row else [row], "train")


GOOD = b'{"text": "a fine film", "label": 1}\n'


@pytest.mark.parametrize("content, message", [
    (GOOD + b'{"text": "caf\xe9", "label": 0}\n', r"train.jsonl:2: byte 0xe9 at column 14 is not UTF-8; save the file as UTF-8"),
    (GOOD + b'{"text": "oops", "label": 0\n', r"train.jsonl:2: not valid JSON \(Expecting ',' delimiter at column 28\)"),
    (GOOD + b'\n{"text": null, "label": 0}\n', r"train.jsonl:3: column 'text' is null, not text"),
    (GOOD + b'{"text": 5, "label": 0}\n', r"train.jsonl:2: column 'text' is a number, not text"),
    (GOOD + b'["a fine film", 1]\n', r"train.jsonl:2: a row must be a JSON object with the columns text, not a list"),
    (GOOD + b'{"text": "no label"}\n', r"train.jsonl:2: no column 'label' \(columns: text\); set task.label_column="),
    (GOOD + b'{"text": "x", "label": 7}\n', r"train.jsonl:2: label 7, outside 0..1 \(neg, pos\)"),
    (GOOD + GOOD + b'\xef\xbb\xbf' + GOOD, r"train.jsonl:3: not valid JSON \(Unexpected UTF-8 BOM"),
])
def test_bad_rows_name_the_file_line_and_problem(tmp_path, content, message):
    (tmp_path / "rotten_tomatoes").mkdir()
    (tmp_path / "rotten_tomatoes" / "train.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_rows(task_cfg("rotten_tomatoes"), tmp_path, "train")


def test_a_leading_byte_order_mark_and_crlf_lines_are_read(tmp_path):
    (tmp_path / "rotten_tomatoes").mkdir()
    (tmp_path / "rotten_tomatoes" / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + GOOD.replace(b"\n", b"\r\n") * 2)
    assert load_rows(task_cfg("rotten_tomatoes"), tmp_path, "train") == [json.loads(GOOD)] * 2


def test_offline_fails_at_once_without_asking_the_hub(tmp_path, monkeypatch):
    import datasets

    def hub_call(*args, **kwargs):
        raise AssertionError("the HF Hub was asked although it cannot answer")

    monkeypatch.setattr(datasets, "load_dataset", hub_call)
    with pytest.raises(DataError, match=r"the data root .*missing does not exist.*'glue/qqp'.*\(HF_HUB_OFFLINE is set\)"):
        load_rows(task_cfg("qqp"), tmp_path / "missing", "train")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    with pytest.raises(DataError, match=r"'squad' could not be loaded \(http://127.0.0.1:9 is unreachable"):
        load_rows(task_cfg("squad"), tmp_path, "train")


def test_label_names_map_to_their_ids(tokenizer):
    task = Task(task_cfg("rotten_tomatoes"), tokenizer, max_length=16)
    assert task.encode([{"text": "fine", "label": "pos"}], "train").references == [1]


def test_prediction_inputs_from_csv_and_json(tmp_path):
    (tmp_path / "a.csv").write_text("text\ngood film\nbad film\n")
    (tmp_path / "b.json").write_text(json.dumps(["good film", {"text": "bad film"}]))
    assert read_inputs(tmp_path / "a.csv") == [{"text": "good film"}, {"text": "bad film"}]
    assert read_inputs(tmp_path / "b.json") == [{"text": "good film"}, {"text": "bad film"}]
    with pytest.raises(DataError, match="does not exist"):
        read_inputs(tmp_path / "missing.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty.jsonl holds no rows to predict on"):
        read_inputs(tmp_path / "empty.jsonl")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftext\nfine\n")
    rows = read_inputs(tmp_path / "bom.csv")
    assert rows == [{"text": "fine"}] and rows.where == [f"{tmp_path / 'bom.csv'}:2"]
