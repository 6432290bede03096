#!/usr/bin/env python3
"""The C++ reference as an oracle for tests/pdq.rs: makes pictures with Pillow from the
given photos (resized, JPEG quality 30, WebP, cropped by 5 %, greyscale) and random ones,
writes them to OUT_DIR and prints, per picture, its name, the PDQ hash that Meta's C++
(the `pdqhash` bindings, on the pixels Pillow decodes) gives it, and its quality:

    NAME <TAB> HEX <TAB> QUALITY

Usage: pdq_oracle.py OUT_DIR PHOTO...
scripts/test.sh installs Pillow, numpy and pdqhash (pinned)."""

import os
import sys

import numpy
import pdqhash
from PIL import Image


def hex_of(bits):
    # The bindings give 256 bits, most significant first, as Meta's tools print them.
    return "".join("%x" % int("".join(str(b) for b in bits[i:i + 4]), 2) for i in range(0, 256, 4))


def variants(name, photo):
    w, h = photo.size
    yield name + "-half.png", photo.resize((w // 2, h // 2), Image.BILINEAR), {}
    yield name + "-q30.jpg", photo, {"quality": 30}
    yield name + ".webp", photo, {"quality": 80}
    dx, dy = w // 20, h // 20
    yield name + "-crop.png", photo.crop((dx, dy, w - dx, h - dy)), {}
    yield name + "-grey.png", photo.convert("L"), {}


def random_pictures(count):
    rng = numpy.random.default_rng(19)
    for i in range(count):
        # Noise on a few large blocks: features PDQ sees, not only noise.
        blocks = rng.integers(0, 256, (8, 8, 3), dtype=numpy.uint8)
        base = numpy.kron(blocks, numpy.ones((32, 32, 1), dtype=numpy.uint8))
        noise = rng.integers(0, 32, base.shape, dtype=numpy.uint8)
        yield "random-%d.png" % i, Image.fromarray(base + noise), {}


def main():
    out = sys.argv[1]
    made = []
    for path in sys.argv[2:]:
        name = os.path.splitext(os.path.basename(path))[0]
        made.extend(variants(name, Image.open(path).convert("RGB")))
    made.extend(random_pictures(8))
    for name, picture, options in made:
        target = os.path.join(out, name)
        picture.save(target, **options)
        pixels = numpy.asarray(Image.open(target).convert("RGB"))
        bits, quality = pdqhash.compute(pixels)
        print("%s\t%s\t%d" % (name, hex_of(bits), quality))


if __name__ == "__main__":
    main()
