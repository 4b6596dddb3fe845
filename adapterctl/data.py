"""Tasks: where a task's rows come from, and how its columns become model inputs and labels.

Rows come from a local folder first (``<data root>/<task>/<split>.jsonl``, the layout of
../shared/data) and from the HF Hub by dataset id otherwise. Each row is tokenized once; a
batch is padded to its own longest row (dynamic padding). Four shapes of task: single
sentences, sentence pairs (both ``classification``), token tagging with labels on the first
word piece of each word, extractive QA with answer spans mapped to token positions,
``causal_lm``: a prompt template rendered from the row, the label word as the completion, the
loss on the completion's tokens only (the model is scored on the label word it generates), and
``seq2seq`` (encoder-decoders: T5, BART): the rendered prompt is the encoder's input and the
label word, through a ``target`` template, the decoder's labels.
"""

from __future__ import annotations

import codecs
import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

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
    """One split's rows: ``<root>/<task.name>/<split>.jsonl``, else ``datasets.load_dataset``.
    Every row is checked against the task here, so an error names the file and line."""
    folder = data_folder(task)
    local = root / folder / f"{split}.jsonl"
    if local.is_file():
        rows, fields = read_jsonl(local), plain(task)
        for row, where in zip(rows, rows.where):
            problem = row_problem(fields, row)
            if problem:
                raise DataError(f"{where}: {problem}")
        return list(rows)
    if (root / folder).is_dir():
        have = ", ".join(sorted(p.stem for p in (root / folder).glob("*.jsonl"))) or "no .jsonl files"
        raise DataError(f"{local} is missing ({root / folder} has {have}); add it or choose another split")
    dataset = task.dataset + (f"/{task.subset}" if task.subset else "")
    where = f"{local} does not exist" if root.is_dir() else f"the data root {root} does not exist"
    no_data = (f"no local data for task {task.name!r} ({where}) and the HF Hub dataset {dataset!r} could not be loaded "
               f"({{}}); set ADAPTERCTL_DATA or data_root=<folder with {folder}/{split}.jsonl>, or go online")
    offline = hub_offline()
    if offline:
        raise DataError(no_data.format(offline))
    hf_split = task.splits.get(split, split)
    try:
        import datasets

        ds = datasets.load_dataset(task.dataset, task.subset, split=hf_split)
    except Exception as e:  # noqa: BLE001 - unknown id, no such split, ...: one message says where data can come from
        raise DataError(no_data.format(type(e).__name__)) from None
    rows, fields = [dict(row) for row in ds], plain(task)
    for i, row in enumerate(rows):
        problem = row_problem(fields, row)
        if problem:
            raise DataError(f"HF dataset {dataset} ({hf_split}) row {i}: {problem}")
    return rows


def data_folder(task) -> str:
    """The task's folder under the data root: ``task.data`` when it reads another task's rows
    (``rotten_tomatoes_lm`` reads ``rotten_tomatoes/``), else its name."""
    return task.get("data") or task.name


def hub_offline(timeout: float = 3.0) -> str | None:
    """Why the HF Hub cannot serve data now (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` set, or
    no answer within ``timeout`` seconds), or None: so an offline run fails at once instead
    of after the Hub client's retries."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name} is set"
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as e:
        return f"{endpoint} is unreachable: {getattr(e, 'reason', e)}"
    return None


class Rows(list):
    """Rows read from a file, with where each one is (``file:line``) for error messages."""

    def __init__(self, rows=(), where=()):
        super().__init__(rows)
        self.where = list(where)


def read_jsonl(path: Path) -> Rows:
    """One JSON value per non-blank line (a leading byte-order mark is allowed); bytes that are
    not UTF-8 and malformed lines are errors that name the file and the line."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    rows = Rows()
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8; "
                            "save the file as UTF-8") from None
        try:
            rows.append(json.loads(text))
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON "
                            "object") from None
        rows.where.append(where)
    return rows


def _kind_of(value) -> str:
    return {type(None): "null", bool: "true/false", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def plain(task):
    """The task config as plain Python, for per-row checks: reading an OmegaConf node's field costs
    ~0.1 ms, which made checking rotten_tomatoes' 9,596 rows take ~14 CPU-s per run."""
    from omegaconf import DictConfig, OmegaConf

    return SimpleNamespace(**OmegaConf.to_container(task, resolve=True)) if isinstance(task, DictConfig) else task


def row_problem(task, row, with_labels: bool = True) -> str | None:
    """What is wrong with one row for ``task`` (its config), or None: a row that is not an
    object, a missing or null column, text that is not a string, a label out of range."""
    columns = list(task.text_columns)
    if not isinstance(row, dict):
        return f"a row must be a JSON object with the columns {', '.join(columns)}, not {_kind_of(row)}"
    wanted = columns + ([task.label_column] if with_labels else [])
    missing = [c for c in wanted if c not in row]
    if missing:
        key = "task.label_column" if missing == [task.label_column] else "task.text_columns"
        return f"no column {missing[0]!r} (columns: {', '.join(row) or 'none'}); set {key}=... to the right column"
    for column in columns:
        value = row[column]
        if task.kind == "tagging":
            if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
                return f"column {column!r} must be a list of words, not {_kind_of(value)}"
        elif not isinstance(value, str):
            return f"column {column!r} is {_kind_of(value)}, not text; fix the row or drop it"
    if not with_labels:
        return None
    label = row[task.label_column]
    if task.kind == "qa":
        ok = (isinstance(label, dict) and isinstance(label.get("text"), list) and label["text"]
              and isinstance(label.get("answer_start"), list) and len(label["answer_start"]) == len(label["text"]))
        return None if ok else (f"column {task.label_column!r} must be {{\"text\": [...], \"answer_start\": [...]}}, "
                                f"not {_kind_of(label)}")
    names = list(task.label_names)
    if len(names) == 1:  # regression
        return None if _is_number(label) else f"label {label!r} is not a number (a regression task)"
    labels = label if task.kind == "tagging" else [label]
    if task.kind == "tagging" and (not isinstance(label, list) or len(label) != len(row[columns[0]])):
        return f"column {task.label_column!r} must hold one tag per word"
    for value in labels:
        if label_id(value, names) is None:
            return (f"label {value!r}, outside 0..{len(names) - 1} ({', '.join(map(str, names))}); fix the data or "
                    "task.label_names")
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def label_id(value, names: list) -> int | None:
    """An integer label in range, or a label name mapped to its index; None otherwise."""
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    return None


@dataclass
class Encoded:
    """A split ready for the model: tokenized features, plus what the metrics need."""

    features: list[dict]
    references: list = field(default_factory=list)  # labels, tag-name lists or answer-text lists
    extra: list = field(default_factory=list)  # QA: (offsets, context) per row for span decoding

    def __len__(self):
        return len(self.features)


KINDS = ("classification", "tagging", "qa", "causal_lm", "seq2seq")
LM_KINDS = ("causal_lm", "seq2seq")  # scored on generated text; the backbone's own LM head writes it


def check_template(key: str, template: str, fields: list[str]) -> None:
    """A ``str.format`` template may name only ``fields``: an unknown name is a config error now,
    not a KeyError on the first row."""
    try:
        named = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise AdapterConfigError(f"{key}={template!r} is not a valid template ({e}); write columns as {{text}}") from None
    unknown = [n for n in named if n not in fields]
    if unknown:
        raise AdapterConfigError(f"{key} names {{{unknown[0]}}}, which is not among {', '.join(fields)}; name one of "
                                 f"those, or set task.text_columns=[...] to the data's columns")


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
        if self.kind not in KINDS:
            raise AdapterConfigError(f"task.kind must be {', '.join(KINDS[:-1])} or {KINDS[-1]}, got {self.kind!r}")
        if self.kind in LM_KINDS:  # causal_lm: the completion follows the prompt; seq2seq: the target is apart
            key = "completion" if self.kind == "causal_lm" else "target"
            self.prompt, self.completion = cfg.prompt, cfg.get(key) or (" {label}" if key == "completion" else "{label}")
            check_template("task.prompt", self.prompt, self.columns)
            check_template(f"task.{key}", self.completion, ["label"])
            self.completions = [self.completion.format(label=name) for name in self.label_names]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def collator(self, left: bool = False):
        """Batches of the split's features; ``left``: causal_lm prompts padded on the left, for
        generation (an encoder's inputs stay on the right: BART's positions are absolute)."""
        if self.kind in LM_KINDS:
            return LMCollator(pad_id(self.tokenizer), left=left and self.kind == "causal_lm")
        if self.kind == "tagging":
            return DataCollatorForTokenClassification(self.tokenizer, label_pad_token_id=IGNORE)
        return DataCollatorWithPadding(self.tokenizer)

    def encode(self, rows: list[dict], split: str, with_labels: bool = True) -> Encoded:
        if not rows:
            raise DataError(f"task {self.name!r}: the {split} split is empty")
        fields = plain(self.cfg)
        for i, row in enumerate(rows):
            problem = row_problem(fields, row, with_labels)
            if problem:
                raise DataError(f"task {self.name!r}: row {i} of {split}: {problem}")
        if self.kind == "tagging":
            return self._encode_tagging(rows, split, with_labels)
        if self.kind == "qa":
            return self._encode_qa(rows, with_labels)
        if self.kind == "causal_lm":
            return self._encode_causal_lm(rows, with_labels)
        if self.kind == "seq2seq":
            return self._encode_seq2seq(rows, with_labels)
        return self._encode_classification(rows, split, with_labels)

    def _label_id(self, value) -> int:
        return label_id(value, self.label_names)

    def _encode_classification(self, rows, split, with_labels) -> Encoded:
        texts = [[row[c] for row in rows] for c in self.columns]
        enc = self.tokenizer(*texts, truncation=True, max_length=self.max_length)
        features = [{k: enc[k][i] for k in enc} for i in range(len(rows))]
        references = []
        if with_labels:
            if self.num_labels == 1:  # regression
                references = [float(row[self.label_column]) for row in rows]
            else:
                references = [self._label_id(row[self.label_column]) for row in rows]
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
                tags = [self._label_id(t) for t in row[self.label_column]]
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

    def _encode_causal_lm(self, rows, with_labels) -> Encoded:
        """Features: the prompt and the label's completion (and EOS, so generation stops), labels
        -100 on the prompt; ``extra``: the prompt's ids alone, which generation continues."""
        tok = self.tokenizer
        answers = [tok(c, add_special_tokens=False)["input_ids"] + _eos(tok) for c in self.completions]
        room = self.max_length - max(len(a) for a in answers)
        if room < 8:
            raise AdapterConfigError(f"trainer.max_length={self.max_length} leaves {room} tokens for the prompt after "
                                     "the completion; raise trainer.max_length")
        features, references, extra = [], [], []
        for row in rows:
            prompt = self.prompt_ids(row, room)
            extra.append(prompt)
            if with_labels:
                label = self._label_id(row[self.label_column])
                answer = answers[label]
                features.append({"input_ids": prompt + answer, "attention_mask": [1] * (len(prompt) + len(answer)),
                                 "labels": [IGNORE] * len(prompt) + answer})
                references.append(label)
            else:
                features.append({"input_ids": prompt, "attention_mask": [1] * len(prompt)})
        return Encoded(features, references, extra)

    def _encode_seq2seq(self, rows, with_labels) -> Encoded:
        """Features: the prompt (the encoder's input, ``trainer.max_length`` tokens at most) and
        the label's target as the decoder's labels, with the tokenizer's special tokens (T5's and
        BART's EOS, which ends generation); ``extra``: the prompt's ids, which generation reads."""
        targets = [self.tokenizer(text_target=t)["input_ids"] for t in self.completions]
        features, references, extra = [], [], []
        for row in rows:
            prompt = self.prompt_ids(row, self.max_length)
            extra.append(prompt)
            feature = {"input_ids": prompt, "attention_mask": [1] * len(prompt)}
            if with_labels:
                label = self._label_id(row[self.label_column])
                feature["labels"] = targets[label]
                references.append(label)
            features.append(feature)
        return Encoded(features, references, extra)

    def prompt_ids(self, row: dict, room: int) -> list[int]:
        """The rendered prompt's token ids, at most ``room`` of them: a too-long row has its
        longest column shortened by the excess (the template's words stay whole), so the prompt
        still ends with the question the completion answers."""
        tok, row = self.tokenizer, {c: row[c] for c in self.columns}
        for _ in range(4):
            ids = tok(self.prompt.format(**row))["input_ids"]
            excess = len(ids) - room
            if excess <= 0:
                return ids
            longest = max(self.columns, key=lambda c: len(row[c]))
            words = tok(row[longest], add_special_tokens=False)["input_ids"]
            row[longest] = tok.decode(words[:max(len(words) - excess, 0)])
        return ids[-room:]

    def label_of(self, generated: str) -> int:
        """The label whose word a generated text starts with (case, spaces and leading quotes or
        punctuation ignored), -1 for none."""
        text = generated.strip().lstrip(string.punctuation + " ").lower()
        for i, completion in enumerate(self.completions):
            if completion.strip() and text.startswith(completion.strip().lower()):
                return i
        return -1

    def decode(self, outputs: list, encoded: Encoded) -> list:
        """Per-row model outputs of a split -> what the metrics compare with the references:
        label ids (or regression values), tag-name lists (first word pieces only) or answers."""
        if self.kind in LM_KINDS:  # generated texts
            return [self.label_of(text) for text in outputs]
        if self.kind == "qa":
            return [_best_answer(s, e, offsets, ctx) for (s, e), (offsets, ctx) in zip(outputs, encoded.extra)]
        if self.kind == "tagging":
            return [
                [self.label_names[int(p)] for p, lab in zip(row.argmax(-1).tolist(), feature["labels"]) if lab != IGNORE]
                for row, feature in zip(outputs, encoded.features)
            ]
        logits = torch.stack(outputs)
        return logits.view(-1).tolist() if self.num_labels == 1 else logits.argmax(-1).tolist()


def pad_id(tokenizer) -> int:
    """The padding token; a decoder without one pads with EOS (the attention mask hides it)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise AdapterConfigError("the tokenizer has neither a padding nor an end-of-sequence token; give it one")
    return pad


def _eos(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


class LMCollator:
    """Pads ``input_ids`` with the padding token, ``attention_mask`` with 0 and ``labels`` with -100,
    each to its own longest row (an encoder-decoder's labels are not as long as its inputs), on
    the right (training, perplexity) or the left (prompts that ``generate`` continues)."""

    def __init__(self, pad: int, left: bool = False):
        self.pad, self.left = pad, left

    def __call__(self, features: list[dict]) -> dict:
        fill = {"input_ids": self.pad, "attention_mask": 0, "labels": IGNORE}
        batch = {}
        for key in ("input_ids", "attention_mask", "labels"):
            if key in features[0]:
                longest = max(len(f[key]) for f in features)
                rows = [[fill[key]] * (longest - len(f[key])) for f in features]
                rows = [pad + f[key] if self.left else f[key] + pad for pad, f in zip(rows, features)]
                batch[key] = torch.tensor(rows, dtype=torch.long)
        return batch


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


def read_inputs(path: Path) -> Rows:
    """Rows to predict on, from .json (a list of rows or strings), .jsonl or .csv, each with
    where it is (``file:line``, or ``file item n`` for .json)."""
    import csv

    if not path.is_file():
        raise DataError(f"input file {path} does not exist; give file=<path to .json, .jsonl or .csv>")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                rows = Rows()
                for row in reader:
                    rows.append(row)
                    rows.where.append(f"{path}:{reader.line_num}")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: byte 0x{e.object[e.start]:02x} is not UTF-8; save the file as UTF-8") from None
    elif suffix == ".jsonl":
        rows = read_jsonl(path)
    elif suffix == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: byte 0x{e.object[e.start]:02x} is not UTF-8; save the file as UTF-8") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(data, list):
            raise DataError(f"{path} must hold a JSON list of texts or of objects")
        rows = Rows(data, [f"{path} item {i}" for i in range(len(data))])
    else:
        raise DataError(f"cannot read {path}: use a .json, .jsonl or .csv file")
    if not rows:
        raise DataError(f"{path} holds no rows to predict on")
    return Rows([row if isinstance(row, dict) else {"text": row} for row in rows], rows.where)
