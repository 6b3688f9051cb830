"""Reads every .npz of a `gantry capture export` directory with NumPy alone, as a data
scientist would open it (no pickle), and prints each array as JSON: its dtype, shape and
elements (byte strings as hex), so the test compares them with what it sent."""

import argparse
import json
import pathlib

import numpy as np


def element(v):
    if isinstance(v, bytes):
        return v.hex()
    return v


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    out = {}
    for path in sorted(pathlib.Path(args.dir).glob("*.npz")):
        arrays = {}
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                a = npz[name]
                flat = [element(v) for v in a.ravel().tolist()]
                arrays[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "data": flat}
        out[path.name] = arrays
    print(json.dumps(out, allow_nan=False))


if __name__ == "__main__":
    main()
