#!/usr/bin/env python3
"""Generates the small ONNX models the tests use, and their golden vectors.

Run from anywhere: python3 testdata/models/make_models.py
Needs: pip install onnx==1.17.0 numpy   (only to regenerate; the outputs are committed)

- tiny_linear.onnx: y = x @ W + b, x float32 [batch, 4], y float32 [batch, 2].
  Weights are an initializer that some exporters also list as a graph input; this one
  does too, so the bundle tooling must not mistake it for a model input.
- tiny_mlp.onnx: y = relu(x @ W1 + b1) @ W2 + b2, x float32 [batch, 8], y float32 [batch, 3].
- bench_compute.onnx, slow_compute.onnx: no weights, a few ms and about a second of work.
Each has <name>.golden.json: golden vectors as `gantry bundle create --golden` reads them.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 13
rng = np.random.default_rng(20261121)


def save(model, name):
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(HERE, f"{name}.onnx"))


def golden(name, cases, tolerance):
    vectors = []
    for case_name, x, y in cases:
        vectors.append({
            "name": case_name,
            "inputs": {"x": {"dtype": "float32", "shape": list(x.shape), "data": [float(v) for v in x.ravel()]}},
            "outputs": {"y": {"dtype": "float32", "shape": list(y.shape), "data": [float(v) for v in y.ravel()]}},
            "tolerance": tolerance,
        })
    with open(os.path.join(HERE, f"{name}.golden.json"), "w") as f:
        json.dump(vectors, f, indent=2)
        f.write("\n")


def tiny_linear():
    w = np.array([[1.0, -1.0], [0.5, 0.25], [-2.0, 1.0], [0.0, 3.0]], dtype=np.float32)
    b = np.array([0.5, -0.5], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "tiny_linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, producer_name="gantry-testdata", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    save(model, "tiny_linear")
    cases = []
    for case_name, x in [("ones", np.ones((1, 4), np.float32)),
                         ("counting", np.array([[1, 2, 3, 4]], np.float32)),
                         ("batch_of_two", np.array([[0.5, -1, 2, 0], [3, 3, -3, 1]], np.float32))]:
        cases.append((case_name, x, x @ w + b))
    golden("tiny_linear", cases, {"abs": 1e-5, "rel": 1e-5})


def tiny_mlp():
    w1 = rng.standard_normal((8, 16)).astype(np.float32)
    b1 = rng.standard_normal(16).astype(np.float32)
    w2 = rng.standard_normal((16, 3)).astype(np.float32)
    b2 = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
         helper.make_node("Relu", ["h1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["o0"]),
         helper.make_node("Add", ["o0", "b2"], ["y"])],
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(a, n) for a, n in [(w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2")]],
    )
    model = helper.make_model(graph, producer_name="gantry-testdata", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    save(model, "tiny_mlp")
    x = rng.standard_normal((2, 8)).astype(np.float32)
    y = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    golden("tiny_mlp", [("random_pair", x, y)], {"abs": 1e-4, "rel": 1e-4})


def bench_compute():
    """A compute-heavy model with no weights (a tiny file): x [1, 256] → outer product
    [256, 256] → 24 chained square matmuls, each rescaled → sum [1, 1]. A few ms per run on
    CPU, so the inference benchmark can compare endpoint overhead against real work."""
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
             helper.make_node("MatMul", ["xt", "x"], ["h0"])]
    for i in range(24):
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"h{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Mul", [f"m{i}", "scale"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("ReduceSum", ["h24"], ["y"], keepdims=1))
    graph = helper.make_graph(
        nodes, "bench_compute",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        initializer=[numpy_helper.from_array(np.array(1.0 / 256, dtype=np.float32), "scale")],
    )
    model = helper.make_model(graph, producer_name="gantry-testdata", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    save(model, "bench_compute")


def slow_compute():
    """A model that runs about a second on two CPU cores, for tests that need a request
    in flight (a clean stop drains it): x [1, 2048] → outer product [2048, 2048] → 4
    chained square matmuls, each rescaled by 1/2048 → sum [1, 1]. For x of ones every
    intermediate is the all-ones matrix, so the answer is exactly 2048²."""
    n = 2048
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
             helper.make_node("MatMul", ["xt", "x"], ["h0"])]
    for i in range(4):
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"h{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Mul", [f"m{i}", "scale"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("ReduceSum", ["h4"], ["y"], keepdims=1))
    graph = helper.make_graph(
        nodes, "slow_compute",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        initializer=[numpy_helper.from_array(np.array(1.0 / n, dtype=np.float32), "scale")],
    )
    model = helper.make_model(graph, producer_name="gantry-testdata", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    save(model, "slow_compute")
    golden("slow_compute", [("ones", np.ones((1, n), np.float32), np.array([[n * n]], np.float32))],
           {"abs": 0.0, "rel": 1e-6})


if __name__ == "__main__":
    tiny_linear()
    tiny_mlp()
    bench_compute()
    slow_compute()
