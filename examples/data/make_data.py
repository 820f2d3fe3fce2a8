"""Your own evaluation data, in the two shapes modelguard reads: an .npz and an image folder.

    $ python examples/data/make_data.py --out data

Writes (from scikit-learn's bundled digits, test split, as stand-in for your data):

- ``data/digits.npz``: ``x`` float32 (N, C, H, W) in the model's input range [0, 1], ``y``
  int64 class indices;
- ``data/images/<class>/<n>.png``: one sub-folder per class (sorted names = class indices),
  greyscale images scaled to [0, 1] when read.

Then: ``modelguard eval MODEL --data data/digits.npz`` or ``--data data/images``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from modelguard.robustness.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=100, help="examples to write")
    args = parser.parse_args()
    test = load_dataset("digits").subset(args.count)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "digits.npz", x=test.x.astype(np.float32), y=test.y.astype(np.int64))
    for n, (image, label) in enumerate(zip(test.x, test.y, strict=True)):
        folder = args.out / "images" / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.rint(image[0] * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{n:04d}.png")
    print(f"wrote {args.out}/digits.npz and {args.out}/images/ ({len(test)} examples)")


if __name__ == "__main__":
    main()
