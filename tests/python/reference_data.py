"""Writes reference data for a drift test as data scientists do: the validation sample
and the model's outputs on it (Python ONNX Runtime), saved with NumPy's own savez."""

import argparse

import numpy as np
import onnxruntime

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--rows", type=int, default=4000)
parser.add_argument("--out", required=True)
args = parser.parse_args()

rng = np.random.default_rng(20261202)
x = rng.normal(size=(args.rows, 8)).astype(np.float32)
session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
(y,) = session.run(None, {"x": x})
np.savez_compressed(args.out, x=x, y=y)
print(f"wrote {args.out}: x {x.shape} {x.dtype}, y {y.shape} {y.dtype}")
