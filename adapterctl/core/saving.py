"""Saving and loading adapters, heads, fusions and whole setups: the part of ``AdapterModel``
that touches files.

Files are AdapterHub's (``formats/adapterhub.py``: ``adapter_config.json`` +
``adapter.safetensors``, the head and fusion beside them) or PEFT's (``formats/peft.py``). Every
write goes through ``atomic_dir`` (a killed save leaves the previous folder), and a load that
replaces an adapter first proves the folder loads under a scratch name, so a bad file never
costs the adapter already there.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ..errors import AdapterConfigError, AdapterError
from ..formats import adapterhub, peft
from ..formats.files import assign
from ..io import atomic_dir, child, recover
from ..methods.fusion.config import load_fusion_config
from . import composition as C
from .config import load_config


class SaveLoadMixin:
    """``save_*``/``load_*`` of ``AdapterModel``; uses its adapter, head and fusion registry."""

    def _backbone_info(self) -> dict:
        """What a saved file records about the backbone (AdapterHub's envelope fields)."""
        cls = type(self.backbone).__name__
        return {
            "hidden_size": self.hidden_size,
            "model_class": cls[: -len("Model")] + "AdapterModel" if cls.endswith("Model") else cls,
            "model_name": self.model_name,
            "model_type": self.config.model_type,
        }

    def _state_of(self, modules: list[nn.Module], keep_vars: bool = False) -> dict:
        """The model's state-dict entries of ``modules`` (AdapterHub's keys)."""
        wanted = {id(m) for m in modules}
        return {f"{prefix}.{key}": value
                for prefix, module in self.named_modules() if id(module) in wanted
                for key, value in module.state_dict(keep_vars=keep_vars).items()}

    def _head_state(self, name: str, keep_vars: bool = False) -> dict:
        return self._state_of([self.heads[name]], keep_vars)

    def save_adapter(self, directory, name: str, with_head: bool = True, overwrite: bool = False,
                     metadata: dict | None = None, format: str = "adapterhub") -> Path:
        """Write ``adapter_config.json`` + ``adapter.safetensors`` (and the head of the same
        name) to ``directory``, atomically; an existing folder is kept unless ``overwrite``.
        ``format="peft"``: a PEFT folder (LoRA, IA3, PEFT's DoRA, VeRA; the head as ``modules_to_save``
        where it is the task model's own head kind), ``formats/peft.py``."""
        self._require_adapter(name)
        if format == "peft":
            return peft.save(self, directory, name, overwrite)
        if format != "adapterhub":
            raise AdapterConfigError(f"unknown adapter format {format!r}; use 'adapterhub' or 'peft'")
        env = adapterhub.envelope(self._backbone_info(), name, self.adapters_config[name].to_file_dict())
        if metadata:
            env["adapterctl"] = metadata
        with atomic_dir(directory, overwrite) as tmp:
            adapterhub.write_adapter(tmp, env, self._state_of(self.adapter_modules(name)))
            if with_head and name in self.heads:
                self.write_head(tmp, name)
        return Path(directory)

    def write_head(self, folder, name: str) -> None:
        """The head ``name`` into an existing ``folder`` (beside an adapter or a full model)."""
        env = adapterhub.envelope(self._backbone_info(), name, self.heads[name].config)
        adapterhub.write_head(Path(folder), env, self._head_state(name))

    def _resolve(self, source) -> tuple[Path, str]:
        """A local folder, or a Hub identifier resolved (and downloaded) by ``adapterctl.hub``
        among the adapters that fit this backbone; and the name the adapter takes if its files
        name none."""
        path = recover(Path(source))  # an overwrite killed between its renames: the previous folder comes back
        if path.is_dir():
            return path, path.name
        if path.exists():
            raise AdapterConfigError(f"{path} is a file; give the folder that holds {adapterhub.ADAPTER_CONFIG}")
        from .. import hub  # only when a name is not a local folder
        from ..hub.identifiers import default_name

        path = hub.resolve(str(source), model=self)
        return path, default_name(source, path)

    def load_adapter(self, source, load_as: str | None = None, with_head: bool = True, set_active: bool = False,
                     labels=None, overwrite_ok: bool = False) -> str:
        """Load an adapter folder (ours or AdapterHub's, of any registered method) or a Hub
        identifier; returns its name. ``labels``: the label names the task expects; a head whose
        labels differ is refused."""
        path, default = self._resolve(source)
        if peft.is_peft_folder(path):
            return peft.load(self, path, load_as or default, set_active, overwrite_ok)
        env, tensors = adapterhub.read_adapter(path)
        adapterhub.check_backbone(self._backbone_info(), env, path)
        config = load_config(env.get("config", env))
        old = env.get("name") or default
        name = load_as or old
        head = self._saved_head(path, load_as, name, labels) if with_head else None
        if overwrite_ok and (name in self.adapters_config or (head is not None and head[0] in self.heads)):
            self._prove_loads(name, lambda n: self._load_adapter_as(n, config, tensors, old, head and (n, *head[1:]),
                                                                    path, overwrite_ok=False), self.delete_adapter)
        self._load_adapter_as(name, config, tensors, old, head, path, overwrite_ok)
        if set_active:
            self.set_active_adapters(name)
        return name

    def _saved_head(self, path: Path, load_as: str | None, default: str, labels=None):
        """``(name, envelope, tensors)`` of the head saved in ``path``, or ``None``. As in AdapterHub,
        it is named ``load_as`` if given, else as its file says (``save_adapter_fusion(...,
        with_head="<name>")`` picks any name), else ``default``."""
        if not adapterhub.has_head(path):
            return None
        env, tensors = adapterhub.read_head(path)
        adapterhub.check_backbone(self._backbone_info(), env, path)
        adapterhub.check_labels(env, labels, path)
        return load_as or env.get("name") or default, env, tensors

    def _prove_loads(self, name: str, load, delete) -> None:
        """Replacing ``name`` drops the old one (and what depends on it): first load the folder
        under a scratch name with ``load(scratch)``, then ``delete(scratch)``; a folder that does
        not load leaves the old one in place."""
        scratch = f"{name}-check"
        try:
            load(scratch)
        except AdapterError as error:  # its keys named as the replaced one's own
            raise type(error)(str(error).replace(f".{scratch}.", f".{name}.")) from None
        delete(scratch)
        if scratch in self.heads:
            self.delete_head(scratch)

    def _load_adapter_as(self, name, config, tensors, old, head, path, overwrite_ok) -> None:
        self.add_adapter(name, config, overwrite_ok=overwrite_ok)
        try:
            expected = self._state_of(self.adapter_modules(name), keep_vars=True)
            method = self._method_of(name)
            tensors = method.file_tensors(tensors)
            assign(adapterhub.to_model_keys(tensors, expected, self.base_model_prefix, old, name, method.containers),
                   expected, path)
            if head is not None:
                self._load_head_as(*head, path, overwrite_ok)
        except BaseException:
            self.delete_adapter(name)
            raise

    def load_head(self, directory, load_as: str | None = None, labels=None, overwrite_ok: bool = False) -> str:
        """Load the head in a folder (beside an adapter or a full model); returns its name."""
        path = Path(directory)
        env, tensors = adapterhub.read_head(path)
        adapterhub.check_backbone(self._backbone_info(), env, path)
        adapterhub.check_labels(env, labels, path)
        name = load_as or env.get("name") or path.name
        self._load_head_as(name, env, tensors, path, overwrite_ok)
        return name

    def _load_head_as(self, name, env, tensors, path, overwrite_ok) -> None:
        old = env.get("name") or path.name  # the name its weights are saved under
        config = dict(env["config"])
        head_type = config.pop("head_type")
        label2id = config.pop("label2id", None)
        if label2id:
            config["id2label"] = {int(i): label for label, i in label2id.items()}
        if name in self.heads and not overwrite_ok:
            raise AdapterConfigError(f"a head named {name!r} already exists; pass overwrite_ok=True or load_as=...")
        self.add_head(name, head_type, overwrite_ok=True, **config)
        try:
            expected = self._head_state(name, keep_vars=True)
            own = {k: v for k, v in tensors.items() if k.startswith(f"heads.{old}.")}
            assign(adapterhub.to_model_keys(own, expected, "", old, name, ("heads",)), expected, path)
        except BaseException:
            self.delete_head(name)
            raise

    def save_fusion(self, directory, name, with_head: bool = True, overwrite: bool = False) -> Path:
        name = self._require_fusion(name)
        env = adapterhub.envelope(self._backbone_info(), name, self.fusions_config[name].to_dict())
        with atomic_dir(directory, overwrite) as tmp:
            adapterhub.write_fusion(tmp, env, self._state_of(self.fusion_modules(name)))
            if with_head and name in self.heads:
                self.write_head(tmp, name)
        return Path(directory)

    def load_fusion(self, directory, load_as: str | None = None, with_head: bool = True, set_active: bool = False,
                    overwrite_ok: bool = False) -> str:
        """Load a fusion folder; the adapters it fuses must be loaded already."""
        path = recover(Path(directory))
        env, tensors = adapterhub.read_fusion(path)
        adapterhub.check_backbone(self._backbone_info(), env, path)
        old = env.get("name") or path.name
        name = load_as or old
        adapters, config = name.split(","), load_fusion_config(env["config"])
        head = self._saved_head(path, load_as, name) if with_head else None
        if overwrite_ok and (name in self.fusions_config or (head is not None and head[0] in self.heads)):
            self._prove_loads(name, lambda n: self._load_fusion_as(n, adapters, config, tensors, old,
                                                                   head and (n, *head[1:]), path, overwrite_ok=False),
                              self.delete_fusion)
        self._load_fusion_as(name, adapters, config, tensors, old, head, path, overwrite_ok)
        if set_active:
            self.set_active_adapters(C.Fuse(*adapters))
        return name

    def _load_fusion_as(self, name, adapters, config, tensors, old, head, path, overwrite_ok) -> None:
        self.add_fusion(adapters, config, name=name, overwrite_ok=overwrite_ok)
        try:
            expected = self._state_of(self.fusion_modules(name), keep_vars=True)
            assign(adapterhub.to_model_keys(tensors, expected, self.base_model_prefix, old, name,
                                            ("adapter_fusion_layer",)), expected, path)
            if head is not None:
                self._load_head_as(*head, path, overwrite_ok)
        except BaseException:
            self.delete_fusion(name)
            raise

    def save_adapter_setup(self, directory, setup=None, overwrite: bool = False) -> Path:
        """Save a whole setup (the active one by default) as AdapterHub does: ``adapter_setup.json``
        plus one folder per adapter and per fusion, heads beside them."""
        block = self._checked_setup(setup) if setup is not None else self.active_setup
        if block is None:
            raise AdapterConfigError("no adapter setup to save; pass one or activate one with set_active_adapters")
        head_setup = C.heads_of(block) if setup is not None else self.active_head
        with atomic_dir(directory, overwrite) as tmp:
            adapterhub.write_setup(tmp, block, head_setup)
            for name in block.flatten():
                self.save_adapter(tmp / name, name)
            for name in C.fusions_in(block):
                self.save_fusion(tmp / name, name)
        return Path(directory)

    def load_adapter_setup(self, directory, set_active: bool = False):
        """Load what ``save_adapter_setup`` wrote; returns ``(setup, head_setup)``."""
        folder = recover(Path(directory))
        block, head_setup = adapterhub.read_setup(folder)
        C.validate(block)
        names, fusions = block.flatten(), C.fusions_in(block)
        paths = {name: child(folder, name, "adapter_setup.json child") for name in names + fusions}
        for name in names:
            self.load_adapter(paths[name])
        for name in fusions:
            self.load_fusion(paths[name])
        if set_active:
            self.set_active_adapters(block)
        return block, head_setup
