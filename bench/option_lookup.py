"""Benchmark: where a model's multiple-choice answers go wrong, reading the image or picking the letter.

Teacher-forced on ShapeWorld eval multiple-choice questions (nothing is generated), per kind:

- `letter | trace`: the model is given the question and the reference trace up to "option" (it
  already names the right option's text) and must continue with that option's letter: an
  option lookup in the prompt, no image needed. Chance is one over the number of options.
- `value | prefix` (colour and shape questions): given the trace up to "is" / "is a" (the
  object and its position), which option text does the model rank highest next, with the
  question's own image and with the next question's image (what the text alone earns)?

    .venv/bin/python bench/option_lookup.py [--model PATH] [--per-family 150]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/serve.py is named like the `serve` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import collections

FAMILIES = ("spatial_reasoning", "general_vqa", "chart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped tiny model)")
    parser.add_argument("--per-family", type=int, default=150, help="eval questions per family")
    args = parser.parse_args()

    import torch

    from openvlthinker.evaluation import shuffle_images
    from openvlthinker.models import DEFAULT_MODEL, load
    from openvlthinker.prompts import record_messages
    from openvlthinker.rewards.choice import parse_options
    from openvlthinker.tiny.shapeworld import split

    torch.set_num_threads(1)
    model, processor = load(args.model or DEFAULT_MODEL)
    model.eval()
    tok = processor.tokenizer
    samples = [s for s in split("eval", args.per_family) if s.record.task in FAMILIES and s.record.options]
    # The next question's image of the same family, as `eval --shuffle-images` gives it.
    other_images = [images[0] for _, images in shuffle_images([(s.record, [s.image]) for s in samples])]

    def best(sample, image, prefix: str, candidates: list[str]) -> int:
        """Index of the candidate continuation with the highest total logprob after prompt + prefix."""
        messages = record_messages(sample.record, images=[image], mode="think")
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = processor(text=[prompt + prefix], images=[image], return_tensors="pt")
        n = enc["input_ids"].shape[1]
        scores = []
        for text in candidates:
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
            full = dict(enc, input_ids=torch.cat([enc["input_ids"], ids], 1),
                        mm_token_type_ids=torch.cat([enc["mm_token_type_ids"], torch.zeros_like(ids)], 1))
            full["attention_mask"] = torch.ones_like(full["input_ids"])
            with torch.no_grad():
                logp = model(**full).logits[0, n - 1: -1].log_softmax(-1)
            scores.append(logp.gather(1, ids[0][:, None]).sum().item())
        return max(range(len(candidates)), key=scores.__getitem__)

    rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for s, other_image in zip(samples, other_images):
        query = s.record.extra["scene"].get("query", {})
        kind = f"{s.record.task} {query.get('kind')}"
        texts = parse_options(s.record.options)
        letters = list(texts)
        row = rows[kind]
        row["n"] += 1
        row["chance"] += 1 / len(letters)
        trace = s.thinking
        cut = trace.rindex(" option") + len(" option")
        picked = best(s, s.image, "<thinking>" + trace[:cut], [" " + c for c in letters])
        row["letter"] += letters[picked] == s.record.answer
        if query.get("kind") in ("color", "shape"):
            head = trace.index(" is ") + len(" is") + (len(" a") if query["kind"] == "shape" else 0)
            values = [" " + texts[c] for c in letters]
            gold = letters.index(s.record.answer)
            row["value"] += best(s, s.image, "<thinking>" + trace[:head], values) == gold
            row["value_shuffled"] += best(s, other_image, "<thinking>" + trace[:head], values) == gold
    print(f"model {args.model or DEFAULT_MODEL}, ShapeWorld eval multiple choice, {args.per_family} per family, "
          "teacher-forced")
    print(f"{'kind':<28}{'n':>5}{'chance':>8}{'letter | trace':>16}{'value | prefix':>16}{'shuffled':>10}")
    for kind, row in sorted(rows.items()):
        n = row["n"]
        value = (f"{row['value'] / n:>16.2f}{row['value_shuffled'] / n:>10.2f}"
                 if kind.endswith(("color", "shape")) else f"{'':>16}{'':>10}")
        print(f"{kind:<28}{n:>5}{row['chance'] / n:>8.2f}{row['letter'] / n:>16.2f}{value}")


if __name__ == "__main__":
    main()
