"""Prompt tuning in a model: the adapters' prompts at AdapterHub's place
(``<base>.prompt_tuning``), a hook after the family's embedding module that inserts the running
setup's prompt, and a pre-hook on the backbone that grows the 2-D attention mask to match
(transformers builds its attention masks from it after the embeddings).

As in AdapterHub, one prompt runs per pass: the setup's prompt-tuning adapter (a setup may hold
one), with adapters of other methods stacked beside it; and only encoders take prompts
(AdapterHub's ``support_prompt_tuning``): a decoder's KV cache and positions would need the
prompt's positions accounted for at every generation step.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...core.composition import Stack
from ...errors import AdapterConfigError
from ..base import Method, one_adapter
from .config import PromptTuningConfig
from .layer import PromptTuning, repeat_to


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
        if host.family.kind != "encoder":
            raise AdapterConfigError(f"prompt tuning runs on encoders (BERT, RoBERTa, ...), as in AdapterHub; this is a "
                                     f"{host.config.model_type} {host.family.kind}: use prefix_tuning there")
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
        self._hooked = True

    def _prompt(self) -> PromptTuning | None:
        """The running setup's prompt, if any."""
        name = one_adapter(self.host.context.state.setup, self.prompt_tunings, "prompt-tuning")
        return self.prompt_tunings[name] if name is not None else None

    def _before_pass(self, backbone, args, kwargs):
        prompt = self._prompt()
        if prompt is None or kwargs.get("attention_mask") is None:
            return None
        return args, {**kwargs, "attention_mask": prompt.extend_mask(kwargs["attention_mask"])}

    def _after_embeddings(self, embeddings, args, out):
        prompt = self._prompt()
        return prompt(out) if prompt is not None else None

    def delete(self, name: str) -> None:
        if name in self.prompt_tunings:
            del self.prompt_tunings[name]

    def modules(self, name: str) -> list[nn.Module]:
        return [self.prompt_tunings[name]]
