"""Prompt tuning in a model: the adapters' prompts at AdapterHub's place
(``<base>.prompt_tuning``), a hook after the family's embedding module that inserts the running
setup's prompt, and a pre-hook on the backbone that grows the 2-D attention mask to match
(transformers builds its attention masks from it after the embeddings).

Encoders keep AdapterHub's shape: hidden states are ``prompt_length`` positions longer, and a
classification head reads position 0, the first prompt vector. Decoders (which AdapterHub does
not offer prompt tuning on) keep the sequence's shape: the prompt is inserted on the first pass
of a generation only (later passes find it in the KV cache), the positions of RoPE count it,
and the backbone's output drops its positions, so heads, losses and ``generate`` see the
sequence alone. As in AdapterHub, one prompt runs per pass (Stack with other methods).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...core.composition import Stack
from ...errors import AdapterConfigError
from ..base import Method, one_adapter
from .config import PromptTuningConfig
from .layer import PromptTuning, repeat_to

INSERTING = "prompt_tuning.inserting"  # the stash key: whether this pass inserts the prompt (else it is cached)


class PromptTuningMethod(Method):
    name = "prompt_tuning"
    supported_blocks = (Stack,)
    containers = ("prompt_tunings",)

    def __init__(self, host):
        super().__init__(host)
        self.prompt_tunings = nn.ModuleDict()
        self._hooked = False

    def add(self, name: str, config: PromptTuningConfig) -> None:
        host = self.host
        if host.family.kind == "encoder-decoder" or (
                host.family.kind == "decoder"
                and host.backbone.get_submodule(host.family.embeddings) is not host.backbone.get_input_embeddings()):
            raise AdapterConfigError(f"prompt tuning is not supported on {host.config.model_type} models (adapterctl "
                                     "inserts prompts on encoders and Llama-like decoders); use prefix_tuning")
        embedding_size = getattr(host.config, "embedding_size", None) or host.hidden_size
        self._hook()
        prompt = PromptTuning(config, embedding_size, self._token_embeddings(config))
        self.prompt_tunings[name] = host.like_model(prompt)

    def _token_embeddings(self, config: PromptTuningConfig):
        if config.prompt_init != "from_string":
            return None

        def embed(length: int):
            from transformers import AutoTokenizer  # only for from_string

            source = getattr(self.host.config, "tokenizer_name_or_path", None) or self.host.model_name
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(source))
            except (OSError, ValueError) as error:
                raise AdapterConfigError(f"prompt_init='from_string' needs the backbone's tokenizer, and none loads "
                                         f"from {source!r} ({type(error).__name__}); set model.config."
                                         "tokenizer_name_or_path or use prompt_init='random_uniform'") from None
            ids = repeat_to(tokenizer(config.prompt_init_text)["input_ids"], length)
            words = self.host.backbone.get_input_embeddings()
            return words(torch.tensor(ids, device=words.weight.device)).detach().float()

        return embed

    def _hook(self) -> None:
        if self._hooked:
            return
        backbone = self.host.backbone
        backbone.add_module("prompt_tuning", nn.Module())
        backbone.prompt_tuning.add_module("prompt_tunings", self.prompt_tunings)
        backbone.register_forward_pre_hook(self._before_pass, with_kwargs=True)
        backbone.get_submodule(self.host.family.embeddings).register_forward_hook(self._after_embeddings)
        if self.host.family.kind == "decoder":
            backbone.register_forward_hook(self._after_pass)
        self._hooked = True

    def _prompt(self) -> PromptTuning | None:
        """The running setup's prompt, if this pass inserts or has inserted one."""
        state = self.host.context.state
        name = one_adapter(state.setup, self.prompt_tunings, "prompt-tuning")
        return self.prompt_tunings[name] if name is not None else None

    def _before_pass(self, backbone, args, kwargs):
        prompt = self._prompt()
        if prompt is None:
            return None
        changes = {}
        if kwargs.get("attention_mask") is not None:
            changes["attention_mask"] = prompt.extend_mask(kwargs["attention_mask"])
        if self.host.family.kind == "decoder":
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            inserting = cache is None or cache.get_seq_length() == 0
            self.host.context.state.stash[INSERTING] = inserting
            if kwargs.get("position_ids") is not None:  # RoPE's positions count the prompt
                positions = kwargs["position_ids"]
                changes["position_ids"] = prompt.extend_positions(positions) if inserting else positions + len(prompt)
        return args, {**kwargs, **changes}

    def _after_embeddings(self, embeddings, args, out):
        prompt = self._prompt()
        if prompt is None or not self.host.context.state.stash.get(INSERTING, True):
            return None
        return prompt(out)

    def _after_pass(self, backbone, args, out):
        """A decoder's output without the prompt's positions."""
        prompt = self._prompt()
        if prompt is None or not self.host.context.state.stash.get(INSERTING, True):
            return None
        out["last_hidden_state"] = prompt.remove(out["last_hidden_state"])
        return out

    def delete(self, name: str) -> None:
        if name in self.prompt_tunings:
            del self.prompt_tunings[name]

    def modules(self, name: str) -> list[nn.Module]:
        return [self.prompt_tunings[name]]
