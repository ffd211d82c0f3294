"""A synthetic captioned-image set in the Flickr8k layout, for the demo and the tests.

Each 64x64 image shows two coloured shapes (circle, square, triangle) side by side or one above
the other; its five captions say what and where in varied templates ("a red circle left of a blue
square", "a blue square is to the right of a red circle", ...). A caption can only be right if the
model looks at the right place, which is what soft attention is for. Written once, deterministically
(seed 0), and skipped when the folder is already complete.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
IMAGE_SIZE = 64
TEMPLATES = (
    "a {a} {rel} a {b}",
    "a {b} {orel} a {a}",
    "there is a {a} {rel} a {b}",
    "a {a} is {rel} a {b}",
    "the {b} is {orel} the {a}",
)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, colour, cx: float, cy: float, r: float) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)


def render_scene(rng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    """One image and its five captions."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(img)
    objects = []
    while len(objects) < 2:
        obj = (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
        if obj not in objects:
            objects.append(obj)
    relation = str(rng.choice(list(OPPOSITE)))
    # First object at the place the relation names; small jitter in position and size.
    half = IMAGE_SIZE / 2
    a_pos, b_pos = {"left of": ((0.5, 1.0), (1.5, 1.0)), "right of": ((1.5, 1.0), (0.5, 1.0)),
                    "above": ((1.0, 0.5), (1.0, 1.5)), "below": ((1.0, 1.5), (1.0, 0.5))}[relation]
    for (colour, shape), (px, py) in zip(objects, (a_pos, b_pos)):
        cx = px * half + rng.uniform(-5, 5)
        cy = py * half + rng.uniform(-5, 5)
        _draw_shape(draw, shape, COLOURS[colour], cx, cy, rng.uniform(8, 12))
    a, b = (f"{c} {s}" for c, s in objects)
    captions = [t.format(a=a, b=b, rel=relation, orel=OPPOSITE[relation]) for t in TEMPLATES]
    return img, captions


def write_shapes_dataset(root: str | Path, num_train: int = 1500, num_dev: int = 150,
                         num_test: int = 150, seed: int = 0) -> Path:
    """Write root/{Flickr8k.token.txt, Flicker8k_Dataset/*.jpg, Flickr_8k.{train,dev,test}Images.txt}.
    Skipped when root/.complete records the same sizes."""
    root = Path(root)
    stamp = root / ".complete"
    sizes = f"{num_train} {num_dev} {num_test} {seed}\n"
    if stamp.is_file() and stamp.read_text() == sizes:
        return root
    images_dir = root / "Flicker8k_Dataset"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    names = {"train": [], "dev": [], "test": []}
    counts = {"train": num_train, "dev": num_dev, "test": num_test}
    index = 0
    for split, count in counts.items():
        for _ in range(count):
            name = f"shapes_{index:05d}.jpg"
            img, captions = render_scene(rng)
            img.save(images_dir / name, quality=95)
            lines += [f"{name}#{k}\t{c}" for k, c in enumerate(captions)]
            names[split].append(name)
            index += 1
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    for split, file in (("train", "Flickr_8k.trainImages.txt"), ("dev", "Flickr_8k.devImages.txt"),
                        ("test", "Flickr_8k.testImages.txt")):
        (root / file).write_text("\n".join(names[split]) + "\n")
    stamp.write_text(sizes)
    print(f"wrote the synthetic shapes set to {root} ({num_train}/{num_dev}/{num_test} images)")
    return root
