"""Scene-based families: spatial grounding, spatial reasoning, general VQA and math counting.

Each builder takes a seeded `random.Random` and the image size and returns a `Draft`.
Questions that turn out ambiguous for the sampled scene (no unique description, a
relation too close to call) are re-drawn rather than answered loosely.
"""

from __future__ import annotations

import json
import random
from typing import Callable

from .common import COLORS, SHAPES, Draft, fmt_ratio, lettered
from .scene import Shape, distance, phrase, pick_phrase, plural, random_attrs, render_scene

_RETRIES = 200


def _scene_facts(shapes: list[Shape], bg: tuple[int, int, int]) -> dict:
    return {"objects": [s.to_dict() for s in shapes], "background": list(bg)}


def _retry(build: Callable[[], Draft | None]) -> Draft:
    # Builders return None for an ambiguous draw; a fresh draw from the same rng stays deterministic.
    for _ in range(_RETRIES):
        draft = build()
        if draft is not None:
            return draft
    raise RuntimeError("ShapeWorld: no unambiguous question after many draws")


def spatial_grounding(rng: random.Random, size: int) -> Draft:
    """Referring expression -> tight pixel box of a uniquely described shape."""
    image, shapes, bg = render_scene(rng, size, random_attrs(rng, rng.randint(2, 4)))
    i = rng.randrange(len(shapes))
    name = pick_phrase(rng, shapes, i)  # full triples are distinct, so never None
    question = rng.choice([
        "What is the bounding box of the {}?",
        "Please provide the bounding box coordinate of the region this sentence describes: the {}.",
        "Locate the {} and give its bounding box.",
    ]).format(name)
    box = list(shapes[i].box)
    facts = _scene_facts(shapes, bg) | {"target": i, "box_1000": [round(v * 1000 / size) for v in box]}
    return Draft(question, "spatial grounding", json.dumps({"boxes": box}), image, "", (), facts)


def _relation(rng: random.Random, size: int) -> Draft | None:
    image, shapes, bg = render_scene(rng, size, random_attrs(rng, rng.randint(2, 4)))
    a, b = rng.sample(range(len(shapes)), 2)
    (ax, ay), (bx, by) = shapes[a].center, shapes[b].center
    margin = 6 * size / 128  # centres closer than this along an axis make the relation unclear
    rels = [r for r, d in (("left of", bx - ax), ("right of", ax - bx), ("above", by - ay), ("below", ay - by))
            if abs(d) >= margin]
    if not rels:
        return None
    rel = rng.choice(rels)
    na, nb = pick_phrase(rng, shapes, a), pick_phrase(rng, shapes, b)
    axis = "x" if rel in ("left of", "right of") else "y"
    va, vb = (round(ax), round(bx)) if axis == "x" else (round(ay), round(by))
    truth = {"left of": va < vb, "right of": va > vb, "above": va < vb, "below": va > vb}[rel]
    gold = "yes" if truth else "no"
    options, letter = lettered(rng, gold, ["no" if truth else "yes"])
    cmp = "<" if va < vb else ">"
    verdict = f"the {na} is {'' if truth else 'not '}{rel} the {nb}"
    thinking = (f"The {na} is at {axis}={va}. The {nb} is at {axis}={vb}. {va} {cmp} {vb}, "
                f"so {verdict}. The answer is {gold}.")
    facts = _scene_facts(shapes, bg) | {"query": {"kind": "relation", "a": a, "b": b, "relation": rel}}
    return Draft(f"Is the {na} {rel} the {nb}?", "multiple choice", letter, image, thinking, options, facts)


def _nearest(rng: random.Random, size: int) -> Draft | None:
    image, shapes, bg = render_scene(rng, size, random_attrs(rng, rng.randint(3, 4)))
    a = rng.randrange(len(shapes))
    others = sorted((j for j in range(len(shapes)) if j != a), key=lambda j: distance(shapes[a], shapes[j]))
    dists = [round(distance(shapes[a], shapes[j])) for j in others]
    if dists[1] - dists[0] < 5 * size / 128:  # nearly tied: not a fair question
        return None
    names = {j: pick_phrase(rng, shapes, j) for j in others}
    name_a = pick_phrase(rng, shapes, a)
    options, letter = lettered(rng, names[others[0]], [names[j] for j in others[1:]])
    listed = ", ".join(f"{names[j]} {d}" for j, d in zip(others, dists))
    thinking = (f"Distances from the {name_a}: {listed}. "
                f"The nearest is the {names[others[0]]}.")
    facts = _scene_facts(shapes, bg) | {"query": {"kind": "nearest", "a": a, "nearest": others[0]}}
    question = f"Which shape is nearest to the {name_a}?"
    return Draft(question, "multiple choice", letter, image, thinking, options, facts)


def _ratio(rng: random.Random, size: int) -> Draft | None:
    if rng.random() < 0.5:  # width ratio of a large and a small shape
        attrs = random_attrs(rng, rng.randint(2, 4))
        attrs[0] = (attrs[0][0], attrs[0][1], "large")
        attrs[1] = (attrs[1][0], attrs[1][1], "small")
        if len(set(attrs)) != len(attrs):
            return None
        image, shapes, bg = render_scene(rng, size, attrs)
        big, small = shapes[0], shapes[1]
        nb, ns = pick_phrase(rng, shapes, 0), pick_phrase(rng, shapes, 1)
        answer = fmt_ratio(big.width, small.width)
        thinking = (f"The {nb} is {big.width} px wide. The {ns} is {small.width} px wide. "
                    f"{big.width} / {small.width} = {answer}.")
        question = f"How many times wider is the {nb} than the {ns}?"
        query = {"kind": "width_ratio", "a": 0, "b": 1}
    else:  # distance ratio: how much farther one shape is from an anchor than another
        image, shapes, bg = render_scene(rng, size, random_attrs(rng, rng.randint(3, 4)))
        a, b, c = rng.sample(range(len(shapes)), 3)
        db, dc = round(distance(shapes[a], shapes[b])), round(distance(shapes[a], shapes[c]))
        if db < dc:
            b, c, db, dc = c, b, dc, db
        if db == dc:
            return None
        na, nb, nc = (pick_phrase(rng, shapes, k) for k in (a, b, c))
        answer = fmt_ratio(db, dc)
        thinking = (f"The {nb} is {db} px from the {na}. The {nc} is {dc} px from it. "
                    f"{db} / {dc} = {answer}.")
        question = f"How many times farther from the {na} is the {nb} than the {nc}?"
        query = {"kind": "distance_ratio", "a": a, "b": b, "c": c}
    facts = _scene_facts(shapes, bg) | {"query": query}
    return Draft(question, "regression", answer, image, thinking, (), facts)


def spatial_reasoning(rng: random.Random, size: int) -> Draft:
    """Left/right/above/below yes-no, nearest shape (multiple choice) or a size/distance ratio."""
    kind = rng.choices([_relation, _nearest, _ratio], weights=[4, 3, 3])[0]
    return _retry(lambda: kind(rng, size))


def _attribute(rng: random.Random, size: int) -> Draft | None:
    attr = rng.choice(["color", "shape", "size"])
    if attr == "size":  # exactly one shape differs in size; options name the shapes
        n, odd = rng.randint(3, 4), rng.choice(["small", "large"])
        pairs = rng.sample([(s, c) for s in SHAPES for c in COLORS], n)
        other = "large" if odd == "small" else "small"
        attrs = [(s, c, odd if k == 0 else other) for k, (s, c) in enumerate(pairs)]
        image, shapes, bg = render_scene(rng, size, attrs)
        names = [phrase(s, ("color", "shape")) for s in shapes]
        options, letter = lettered(rng, names[0], names[1:])
        thinking = f"The {names[0]} is {odd}; the {', '.join(names[1:])} are {other}."
        question = f"Which object is {odd}?"
        target = 0
    else:
        image, shapes, bg = render_scene(rng, size, random_attrs(rng, rng.randint(2, 4)))
        target = rng.randrange(len(shapes))
        name = pick_phrase(rng, shapes, target, exclude=(attr,))
        if name is None:
            return None
        gold = shapes[target].get(attr)
        pool = [v for v in (COLORS if attr == "color" else SHAPES) if v != gold]
        options, letter = lettered(rng, gold, rng.sample(pool, min(len(pool), rng.randint(2, 3))))
        x, y = (round(v) for v in shapes[target].center)
        fact = f"is {gold}" if attr == "color" else f"is a {gold}"
        thinking = f"The {name} at ({x}, {y}) {fact}."
        question = f"What {attr} is the {name}?"
    facts = _scene_facts(shapes, bg) | {"query": {"kind": attr, "target": target}}
    return Draft(question, "multiple choice", letter, image, thinking, options, facts)


def general_vqa(rng: random.Random, size: int) -> Draft:
    """Colour / shape / size attribute of a uniquely described object, 3-4 lettered options."""
    return _retry(lambda: _attribute(rng, size))


def _noun(attr: str, value: str, count: int) -> str:
    return f"{value} {plural('shape', count)}" if attr == "color" else plural(value, count)


def count_matching(objects: list[dict], attr: str, value: str) -> int:
    """How many scene objects (dicts from record.extra) have attr == value."""
    return sum(1 for o in objects if o[attr] == value)


def math_reasoning(rng: random.Random, size: int) -> Draft:
    """Counting with arithmetic: remove a category, add two categories, or a difference."""
    n = rng.randint(3, 6)
    attrs = [(rng.choice(SHAPES), rng.choice(COLORS), "small" if rng.random() < 0.7 else "large")
             for _ in range(n)]
    image, shapes, bg = render_scene(rng, size, attrs)
    objs = [s.to_dict() for s in shapes]
    attr = rng.choice(["shape", "color"])
    values = SHAPES if attr == "shape" else COLORS
    present = sorted({o[attr] for o in objs}, key=values.index)
    op = rng.choice(["remove", "plus", "more"])
    if op == "remove":
        v = rng.choice(present)
        k = count_matching(objs, attr, v)
        answer = n - k
        what = f"{v} shapes" if attr == "color" else plural(v, 2)
        question = f"Remove all {what}. How many objects are left?"
        label = v if attr == "color" else plural(v, k)  # "2 are red" / "2 are circles"
        thinking = f"There are {n} objects. {k} {'is' if k == 1 else 'are'} {label}. {n} - {k} = {answer}."
        chosen = [v]
    else:
        if len(present) >= 2:
            v1, v2 = rng.sample(present, 2)
        else:  # only one category present: pair it with an absent one (count 0)
            v1, v2 = present[0], rng.choice([x for x in values if x != present[0]])
        k1, k2 = count_matching(objs, attr, v1), count_matching(objs, attr, v2)
        if op == "more" and k1 < k2:
            v1, v2, k1, k2 = v2, v1, k2, k1
        answer = k1 + k2 if op == "plus" else k1 - k2
        sign = "+" if op == "plus" else "-"
        thinking = f"I count {k1} {_noun(attr, v1, k1)} and {k2} {_noun(attr, v2, k2)}. {k1} {sign} {k2} = {answer}."
        n1, n2 = _noun(attr, v1, 2), _noun(attr, v2, 2)
        question = (f"How many {n1} plus {n2} are there?" if op == "plus"
                    else f"How many more {n1} than {n2} are there?")
        chosen = [v1, v2]
    facts = _scene_facts(shapes, bg) | {"query": {"op": op, "attr": attr, "values": chosen}}
    return Draft(question, "math", str(answer), image, thinking, (), facts)
