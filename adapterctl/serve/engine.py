"""The model side of the server: one backbone, many adapters (each with its head), and the mixed
batch that answers rows for different adapters together.

Only the batcher's one worker thread calls ``predict``, ``generate``, ``load`` and ``unload``, so
the model is never changed while a batch runs. ``encode`` and ``prompt`` (tokenizing, limits) run
on the event loop and ``locate`` (finding and downloading an adapter) on a helper thread: neither
touches the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..core.model import AdapterModel
from ..errors import AdapterConfigError, AdapterError, AdapterNotFoundError
from ..formats.adapterhub import ADAPTER_CONFIG, HEAD_CONFIG
from ..formats.files import read_json
from ..hub.identifiers import default_name
from ..run.build import adapter_source
from ..run.predict import label_scores as classification_prediction
from . import generation
from .errors import AdapterNameTakenError, RequestTooLargeError, UnservableAdapterError
from .generation import Generation

# head type -> what /v1/predict returns for it (see ``prediction``)
PREDICT_HEADS = ("classification", "multilabel_classification", "tagging")


@dataclass
class Row:
    """One text (or text pair) for one adapter, tokenized."""

    adapter: str
    input_ids: list[int]
    token_type_ids: list[int] | None
    special: list[int]  # 1 where the tokenizer added a special token ([CLS], [SEP], ...)


@dataclass
class LoadedAdapter:
    name: str
    source: str
    head: str
    labels: list[str] | None
    method: str
    params: int

    def to_json(self) -> dict:
        return asdict(self)


def pad(rows: list[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """The rows as one right-padded batch with its attention mask."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r.input_ids)] = torch.tensor(r.input_ids)
        mask[i, :len(r.input_ids)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if rows[0].token_type_ids is not None:
        types = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            types[i, :len(r.token_type_ids)] = torch.tensor(r.token_type_ids)
        batch["token_type_ids"] = types
    return batch


def mixed_logits(model: AdapterModel, rows: list[Row], pad_id: int) -> list[torch.Tensor]:
    """Each row's logits from its own adapter and head, in one mixed batch (token-level logits
    cut to the row's length): the one place where the server runs the model."""
    out = model(**pad(rows, pad_id), adapter_names=[row.adapter for row in rows])
    return [logits[:len(row.input_ids)] if logits.dim() == 2 else logits for logits, row in zip(out.logits, rows)]


def prediction(head, logits: torch.Tensor, tokens: list[str] | None = None, special: list[int] | None = None) -> dict:
    """What /v1/predict returns for one row: a label and scores (classification; one score for
    regression), the labels over 0.5 (multilabel), or a label per token (tagging)."""
    kind = head.config["head_type"]
    names = head.id2label or {}
    if kind == "classification":
        return classification_prediction(logits, head.id2label)
    if kind == "multilabel_classification":
        probs = logits.sigmoid().tolist()
        scores = {names.get(i, str(i)): p for i, p in enumerate(probs)}
        return {"labels": [label for label, p in scores.items() if p >= 0.5], "scores": scores}
    keep = [i for i, s in enumerate(special) if not s]
    best = logits.argmax(-1).tolist()
    return {"tokens": [tokens[i] for i in keep], "labels": [names.get(best[i], str(best[i])) for i in keep]}


class Engine:
    """The served model: adapters by name, the limits on inputs, and the mixed batch."""

    def __init__(self, model: AdapterModel, tokenizer, max_length: int = 512, max_texts: int = 256,
                 max_new_tokens: int = 256):
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions and max_length > positions:
            raise AdapterError(f"max_length={max_length} is over the backbone's {positions} positions; "
                               f"set max_length={positions} or less")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_texts = max_texts
        self.max_new_tokens = max_new_tokens
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.adapters: dict[str, LoadedAdapter] = {}

    @property
    def backbone(self) -> dict:
        return {"model_type": self.model.config.model_type, "hidden_size": self.model.hidden_size,
                "name": self.model.model_name}

    def require(self, name: str, endpoint: str = "predict") -> LoadedAdapter:
        if name not in self.adapters:
            raise AdapterNotFoundError(f"no adapter {name!r} is loaded (loaded: {', '.join(self.adapters) or 'none'}); "
                                       "load it with POST /v1/adapters")
        return self.adapters[name]

    # -- on the event loop ----------------------------------------------------------------

    def encode(self, adapter: str, texts: list[str], pairs: list[str] | None = None) -> list[Row]:
        """Rows for ``texts`` (and their ``pairs``); a text over ``max_length`` tokens is refused,
        not cut: a truncated text would get another answer without saying so."""
        if self.require(adapter).head not in PREDICT_HEADS:
            raise UnservableAdapterError(f"adapter {adapter!r} has a {self.adapters[adapter].head} head: it answers "
                                         "POST /v1/generate")
        if len(texts) > self.max_texts:
            raise RequestTooLargeError(f"{len(texts)} texts in one request; send at most {self.max_texts} "
                                       "(the server's max_texts) per request")
        if pairs is not None and len(pairs) != len(texts):
            raise AdapterConfigError(f"{len(texts)} texts but {len(pairs)} text_pair entries; "
                                     "give one pair per text")
        enc = self.tokenizer(texts, pairs, truncation=False, return_special_tokens_mask=True)
        rows = []
        for i, ids in enumerate(enc["input_ids"]):
            if len(ids) > self.max_length:
                raise RequestTooLargeError(f"text {i} is {len(ids)} tokens long, over the limit of {self.max_length}; "
                                           "shorten it (the server's max_length sets the limit)")
            types = enc["token_type_ids"][i] if "token_type_ids" in enc else None
            rows.append(Row(adapter, ids, types, enc["special_tokens_mask"][i]))
        return rows

    def prompt(self, adapter: str | None, text: str, max_new_tokens: int | None = None, temperature: float = 0.0,
               top_p: float = 1.0, emit=None) -> Generation:
        """A generation of ``text`` continued by ``adapter`` (None: the bare backbone), of at most
        ``max_new_tokens`` (default 64, or the server's limit if lower)."""
        max_new_tokens = min(64, self.max_new_tokens) if max_new_tokens is None else max_new_tokens
        if adapter is not None and self.require(adapter).head != "causal_lm":
            raise UnservableAdapterError(f"adapter {adapter!r} has a {self.adapters[adapter].head} head: it answers "
                                         "POST /v1/predict; /v1/generate needs a causal_lm head")
        head = self.lm_head(adapter)
        if head is None:
            raise UnservableAdapterError(f"the backbone ({self.model.config.model_type}) has no causal_lm head to "
                                         "generate with; serve a *ForCausalLM checkpoint")
        if not 1 <= max_new_tokens <= self.max_new_tokens:
            raise AdapterConfigError(f"max_new_tokens={max_new_tokens}; give 1 to {self.max_new_tokens} (the server's "
                                     "max_new_tokens)")
        ids = self.tokenizer(text)["input_ids"]
        if len(ids) + max_new_tokens > self.max_length:
            raise RequestTooLargeError(f"the prompt is {len(ids)} tokens long and max_new_tokens={max_new_tokens}, "
                                       f"over the limit of {self.max_length} in all; shorten the prompt or ask for "
                                       "fewer tokens (the server's max_length sets the limit)")
        return Generation(adapter, head, ids, max_new_tokens, temperature, top_p, emit)

    # -- on a helper thread ---------------------------------------------------------------

    def locate(self, spec: str, **want) -> Path:
        """The folder of an adapter named by a folder (adapter, run or exported) or a Hub id,
        downloaded and verified as ``adapterctl hub pull`` does; an id the hubs hold only for
        other backbones is a ``WrongBackboneError`` (409)."""
        from .. import hub

        source = adapter_source(spec)
        return source if isinstance(source, Path) else hub.resolve(source, model=self.model, **want)

    # -- on the model's thread ------------------------------------------------------------

    def load(self, path: Path, name: str | None = None, source: str | None = None) -> LoadedAdapter:
        """Load an adapter folder with its head, one that ``/v1/predict`` answers with or a
        ``causal_lm`` head; without a head, on a backbone whose own causal_lm head it then uses."""
        path = Path(path)
        saved = read_json(path / ADAPTER_CONFIG)
        name = name or saved.get("name") or default_name(source or path, path)
        if name in self.adapters:
            raise AdapterNameTakenError(f"an adapter named {name!r} is already loaded; give another name or unload it "
                                        f"first (DELETE /v1/adapters/{name})")
        head_file = path / HEAD_CONFIG
        head_type = read_json(head_file).get("config", {}).get("head_type") if head_file.is_file() else None
        if head_type is None and self.lm_head(None) is None:
            raise UnservableAdapterError(f"{path} has no prediction head ({HEAD_CONFIG}), and the backbone has no "
                                         "causal_lm head to generate with; save the adapter with its head")
        if head_type not in (*PREDICT_HEADS, "causal_lm", None):
            raise UnservableAdapterError(f"{path} has a {head_type} head; the server answers with "
                                         f"{', '.join(PREDICT_HEADS)} heads (/v1/predict) and causal_lm ones "
                                         "(/v1/generate)")
        self.model.load_adapter(path, load_as=name)
        head = self.model.heads[name] if name in self.model.heads else None
        summary = next(r for r in self.model.adapter_summary(as_dict=True) if r["name"] == name)
        labels = [head.id2label[i] for i in sorted(head.id2label)] if head is not None and head.id2label else None
        self.adapters[name] = LoadedAdapter(name, str(source or path), head_type or "causal_lm", labels,
                                            summary["method"], summary["params"])
        return self.adapters[name]

    def lm_head(self, adapter: str | None) -> str | None:
        """The causal_lm head a generation with ``adapter`` runs with: its own, else the backbone's."""
        heads = self.model.heads
        for name in (adapter, "default"):
            if name in heads and heads[name].config["head_type"] == "causal_lm":
                return name
        return None

    def unload(self, name: str) -> None:
        self.require(name)
        self.model.delete_adapter(name)
        if name in self.model.heads:
            self.model.delete_head(name)
        del self.adapters[name]

    @torch.inference_mode()
    def generate(self, jobs: list[Generation]) -> None:
        """One batch of generations (sharing a head and sampling settings); a job whose adapter
        was unloaded after it was queued fails alone."""
        live = []
        for job in jobs:
            try:
                if job.adapter is not None:
                    self.require(job.adapter)
                live.append(job)
            except AdapterNotFoundError as e:
                job.fail(e)
        if live:
            generation.generate(self.model, self.tokenizer, live, self.pad_id)

    @torch.inference_mode()
    def predict(self, rows: list[Row]) -> list[dict | AdapterError]:
        """One mixed batch: a prediction per row, or the error of a row whose adapter was
        unloaded after the row was queued."""
        results: list[dict | AdapterError] = [None] * len(rows)
        live = []
        for i, row in enumerate(rows):
            try:
                self.require(row.adapter)
                live.append(i)
            except AdapterNotFoundError as e:
                results[i] = e
        if live:
            logits = mixed_logits(self.model, [rows[i] for i in live], self.pad_id)
            for i, row_logits in zip(live, logits):
                row, head = rows[i], self.model.heads[rows[i].adapter]
                tokens = self.tokenizer.convert_ids_to_tokens(row.input_ids) if row_logits.dim() == 2 else None
                results[i] = {"adapter": row.adapter, **prediction(head, row_logits, tokens, row.special)}
        return results
