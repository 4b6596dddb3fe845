"""Tasks: where a task's rows come from, and how its columns become model inputs and labels.

Rows come from a local folder first (``<data root>/<task>/<split>.jsonl``, the layout of
../shared/data) and from the HF Hub by dataset id otherwise. Each row is tokenized once; a
batch is padded to its own longest row (dynamic padding). Four shapes of task: single
sentences, sentence pairs (both ``classification``), token tagging with labels on the first
word piece of each word, and extractive QA with answer spans mapped to token positions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

from .errors import AdapterConfigError, AdapterError

IGNORE = -100  # label of positions the loss and the metrics skip
MAX_ANSWER_TOKENS = 30


class DataError(AdapterError):
    """Task data that cannot be found or read as the task describes it."""


def data_root(configured: str | None) -> Path:
    """The configured root, relative to the working folder, else to the repository (CI runs
    from the repository root, where ``../shared/data`` is the shared copy)."""
    path = Path(configured or os.environ.get("ADAPTERCTL_DATA") or "../shared/data").expanduser()
    if path.is_absolute() or path.exists():
        return path
    return Path(__file__).resolve().parents[1] / path


def load_rows(task, root: Path, split: str) -> list[dict]:
    """One split's rows: ``<root>/<task.name>/<split>.jsonl``, else ``datasets.load_dataset``."""
    local = root / task.name / f"{split}.jsonl"
    if local.is_file():
        with local.open() as f:
            return [json.loads(line) for line in f if line.strip()]
    if (root / task.name).is_dir():
        have = ", ".join(sorted(p.stem for p in (root / task.name).glob("*.jsonl"))) or "no .jsonl files"
        raise DataError(f"{local} is missing ({root / task.name} has {have}); add it or choose another split")
    hf_split = task.splits.get(split, split)
    try:
        import datasets

        ds = datasets.load_dataset(task.dataset, task.subset, split=hf_split)
    except Exception as e:  # noqa: BLE001 - offline, unknown id, ...: one message says where data can come from
        dataset = task.dataset + (f"/{task.subset}" if task.subset else "")
        raise DataError(
            f"no local data for task {task.name!r} (looked for {local}) and the HF Hub dataset {dataset!r} "
            f"could not be loaded ({type(e).__name__}); set ADAPTERCTL_DATA or data_root=<folder with "
            f"{task.name}/{split}.jsonl>, or go online"
        ) from None
    return [dict(row) for row in ds]


@dataclass
class Encoded:
    """A split ready for the model: tokenized features, plus what the metrics need."""

    features: list[dict]
    references: list = field(default_factory=list)  # labels, tag-name lists or answer-text lists
    extra: list = field(default_factory=list)  # QA: (offsets, context) per row for span decoding

    def __len__(self):
        return len(self.features)


class Task:
    """A task config (conf/task/*.yaml) bound to a tokenizer and a maximum length."""

    def __init__(self, cfg, tokenizer, max_length: int):
        self.cfg = cfg
        self.name = cfg.name
        self.kind = cfg.kind
        self.columns = list(cfg.text_columns)
        self.label_column = cfg.label_column
        self.label_names = list(cfg.label_names)
        self.tokenizer = tokenizer
        self.max_length = max_length
        if self.kind not in ("classification", "tagging", "qa"):
            raise AdapterConfigError(f"task.kind must be classification, tagging or qa, got {self.kind!r}")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def collator(self):
        if self.kind == "tagging":
            return DataCollatorForTokenClassification(self.tokenizer, label_pad_token_id=IGNORE)
        return DataCollatorWithPadding(self.tokenizer)

    def encode(self, rows: list[dict], split: str, with_labels: bool = True) -> Encoded:
        if not rows:
            raise DataError(f"task {self.name!r}: the {split} split is empty")
        self._check_columns(rows[0], split, with_labels)
        if self.kind == "tagging":
            return self._encode_tagging(rows, split, with_labels)
        if self.kind == "qa":
            return self._encode_qa(rows, with_labels)
        return self._encode_classification(rows, split, with_labels)

    def _check_columns(self, row: dict, split: str, with_labels: bool) -> None:
        wanted = self.columns + ([self.label_column] if with_labels else [])
        missing = [c for c in wanted if c not in row]
        if missing:
            key = "task.label_column" if missing == [self.label_column] else "task.text_columns"
            raise DataError(
                f"task {self.name!r}: the {split} rows have no column {missing[0]!r} (columns: "
                f"{', '.join(row)}); set {key}=... to the right column"
            )

    def _label_id(self, value, index: int, split: str) -> int:
        """An integer label in range; label names are mapped to their index."""
        if isinstance(value, str) and value in self.label_names:
            return self.label_names.index(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.num_labels:
            raise DataError(
                f"task {self.name!r}: row {index} of {split} has label {value!r}, outside 0..{self.num_labels - 1} "
                f"({self.label_names}); fix the data or task.label_names"
            )
        return value

    def _encode_classification(self, rows, split, with_labels) -> Encoded:
        texts = [[row[c] for row in rows] for c in self.columns]
        enc = self.tokenizer(*texts, truncation=True, max_length=self.max_length)
        features = [{k: enc[k][i] for k in enc} for i in range(len(rows))]
        references = []
        if with_labels:
            if self.num_labels == 1:  # regression
                references = [float(row[self.label_column]) for row in rows]
            else:
                references = [self._label_id(row[self.label_column], i, split) for i, row in enumerate(rows)]
            for feature, label in zip(features, references):
                feature["labels"] = label
        return Encoded(features, references)

    def _encode_tagging(self, rows, split, with_labels) -> Encoded:
        words = [row[self.columns[0]] for row in rows]
        enc = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.max_length)
        features, references = [], []
        for i, row in enumerate(rows):
            feature = {k: enc[k][i] for k in enc}
            if with_labels:
                tags = [self._label_id(t, i, split) for t in row[self.label_column]]
                labels, previous = [], None
                for word in enc.word_ids(i):
                    first_piece = word is not None and word != previous
                    labels.append(tags[word] if first_piece else IGNORE)
                    previous = word
                feature["labels"] = labels
                references.append([self.label_names[t] for t in labels if t != IGNORE])
            features.append(feature)
        return Encoded(features, references)

    def _encode_qa(self, rows, with_labels) -> Encoded:
        question, context = self.columns
        enc = self.tokenizer([r[question] for r in rows], [r[context] for r in rows], truncation="only_second",
                             max_length=self.max_length, return_offsets_mapping=True)
        features, references, extra = [], [], []
        for i, row in enumerate(rows):
            in_context = [s == 1 for s in enc.sequence_ids(i)]
            offsets = [o if c else None for o, c in zip(enc["offset_mapping"][i], in_context)]
            feature = {k: enc[k][i] for k in enc if k != "offset_mapping"}
            if with_labels:
                answers = row[self.label_column]
                start_char = answers["answer_start"][0]
                feature["start_positions"], feature["end_positions"] = _span(
                    offsets, start_char, start_char + len(answers["text"][0]))
                references.append(list(answers["text"]))
            features.append(feature)
            extra.append((offsets, row[context]))
        return Encoded(features, references, extra)

    def decode(self, outputs: list, encoded: Encoded) -> list:
        """Per-row model outputs of a split -> what the metrics compare with the references:
        label ids (or regression values), tag-name lists (first word pieces only) or answers."""
        if self.kind == "qa":
            return [_best_answer(s, e, offsets, ctx) for (s, e), (offsets, ctx) in zip(outputs, encoded.extra)]
        if self.kind == "tagging":
            return [
                [self.label_names[int(p)] for p, lab in zip(row.argmax(-1).tolist(), feature["labels"]) if lab != IGNORE]
                for row, feature in zip(outputs, encoded.features)
            ]
        logits = torch.stack(outputs)
        return logits.view(-1).tolist() if self.num_labels == 1 else logits.argmax(-1).tolist()


def _span(offsets, start_char: int, end_char: int) -> tuple[int, int]:
    """Token positions of an answer's characters; (0, 0), the [CLS] token, if truncated away."""
    start = next((t for t, o in enumerate(offsets) if o and o[0] <= start_char < o[1]), None)
    end = next((t for t, o in enumerate(offsets) if o and o[0] < end_char <= o[1]), None)
    return (start, end) if start is not None and end is not None and end >= start else (0, 0)


def _best_answer(start_logits, end_logits, offsets, context: str) -> str:
    """The highest-scoring span of context tokens no longer than ``MAX_ANSWER_TOKENS``."""
    best, answer = None, ""
    starts = torch.as_tensor(start_logits).topk(min(20, len(offsets))).indices.tolist()
    ends = torch.as_tensor(end_logits).topk(min(20, len(offsets))).indices.tolist()
    for s in starts:
        for e in ends:
            if s >= len(offsets) or e >= len(offsets) or not offsets[s] or not offsets[e]:
                continue
            if e < s or e - s + 1 > MAX_ANSWER_TOKENS:
                continue
            score = float(start_logits[s] + end_logits[e])
            if best is None or score > best:
                best, answer = score, context[offsets[s][0]:offsets[e][1]]
    return answer


def read_inputs(path: Path) -> list[dict]:
    """Rows to predict on, from .json (a list of rows or strings), .jsonl or .csv."""
    import csv

    if not path.is_file():
        raise DataError(f"input file {path} does not exist; give file=<path to .json, .jsonl or .csv>")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif suffix == ".json":
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise DataError(f"{path} must hold a JSON list of texts or of objects")
    else:
        raise DataError(f"cannot read {path}: use a .json, .jsonl or .csv file")
    return [row if isinstance(row, dict) else {"text": row} for row in rows]
