#!/usr/bin/env bash
# PDQ of 1,000 x 1,000 decoded RGB pixels: ours (`cargo bench --bench pdq -- pdq-1mp`)
# against Meta's C++ reference (the pdqhash bindings' `compute`, on a numpy array of the
# same size), one after the other in one run, and their ratio (issue 19's figure: <= 1.2).
# Needs python3 with Pillow, numpy 1 and pdqhash (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked --bench pdq -- 'pdq-hash/pdq-1mp' >/dev/null
ours=$(python3 -c 'import json; print(json.load(open("target/criterion/pdq-hash/pdq-1mp/new/estimates.json"))["median"]["point_estimate"] / 1e6)')
cpp=$(python3 - <<'PY'
import time, numpy, pdqhash
from PIL import Image
im = Image.open("tests/data/pdq/bridge-mods/aaa-orig.jpg").convert("RGB").resize((1000, 1000))
pixels = numpy.asarray(im)
pdqhash.compute(pixels)
runs = []
for _ in range(30):
    t = time.perf_counter()
    pdqhash.compute(pixels)
    runs.append(time.perf_counter() - t)
runs.sort()
print(runs[len(runs) // 2] * 1e3)
PY
)
python3 -c "print(f'PDQ of 1 MP: ours {$ours:.2f} ms, C++ {$cpp:.2f} ms, ours / C++ = {$ours / $cpp:.2f}')"
