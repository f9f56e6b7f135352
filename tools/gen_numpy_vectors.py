"""Writes conformance/golden/numpy_integers.json: draws of numpy's default generator that the
multiplier derivation does not reach through hash_params.json (32-bit ranges, negative lows,
full 64-bit ranges, seeds wider than 64 bits, several calls on one generator).

Run with the numpy version recorded in the file: python3 tools/gen_numpy_vectors.py
"""
import json
import pathlib

import numpy as np

SEEDS = [0, 1, 12345, 2**32 + 5, 2**64 - 1, 2**100 + 3]
RANGES = [(0, 7), (0, 1000), (-5, 5), (0, 2**32 - 1), (0, 2**32), (7, 2**32 + 7),
          (0, 2**40), (0, 2**63 - 1), (-(2**63), 2**63 - 1)]

cases = []
for seed in SEEDS:
    rng = np.random.default_rng(seed)
    draws = []
    # One generator serves every range in turn, so the 32-bit spare word carries over.
    for low, high in RANGES:
        values = rng.integers(low, high, size=9, dtype=np.int64)
        draws.append({"low": low, "high": high, "values": [int(v) for v in values]})
    cases.append({"seed": str(seed), "draws": draws})

out = pathlib.Path(__file__).resolve().parent.parent / "conformance" / "golden" / "numpy_integers.json"
out.write_text(json.dumps({"numpy": np.__version__, "cases": cases}, indent=1) + "\n")
print(f"wrote {out}")
