#!/usr/bin/env python3
"""Generates the small ONNX models the tests use, and their golden vectors.

Run from anywhere: python3 testdata/models/make_models.py
Needs: pip install onnx==1.17.0 numpy   (only to regenerate; the outputs are committed)

- tiny_linear.onnx: y = x @ W + b, x float32 [batch, 4], y float32 [batch, 2].
  Weights are an initializer that some exporters also list as a graph input; this one
  does too, so the bundle tooling must not mistake it for a model input.
- tiny_mlp.onnx: y = relu(x @ W1 + b1) @ W2 + b2, x float32 [batch, 8], y float32 [batch, 3].
- bench_compute.onnx, slow_compute.onnx: no weights, a few ms and about a second of work.
- all_types.onnx: one input and one output per tensor type the Open Inference Protocol
  names but BF16 (in_bool … in_string, [batch, 3]), each output the input passed through,
  declared in the protocol's order, which is not alphabetical. bfloat16.onnx: the same for
  BF16 alone (Python ONNX Runtime cannot feed BF16 and strings to one session).
- image_pool.onnx: x float32 [1, 3, 224, 224] → per-channel mean y [1, 3], for a golden
  vector of an image's size.
Each of the first four has <name>.golden.json: golden vectors as `gantry bundle create
--golden` reads them; all_types has one with every type's extremes.
- identity_1m.onnx: x float32 [batch, 262144] passed through (1 MiB a row), for JSON vs
  binary transfer. batch_mlp.onnx: x float32 [batch, 512] through 8 layers of a 512×512
  matmul (constant weights built in the graph, so the file is tiny) and tanh: about 4
  MFLOP a row, for dynamic batching's gain.
Regenerate one model: python3 testdata/models/make_models.py all_types
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


# Protocol order: BOOL, UINT8…UINT64, INT8…INT64, FP16, FP32, FP64, BF16, BYTES.
ALL_TYPES = [
    ("bool", TensorProto.BOOL), ("uint8", TensorProto.UINT8), ("uint16", TensorProto.UINT16),
    ("uint32", TensorProto.UINT32), ("uint64", TensorProto.UINT64), ("int8", TensorProto.INT8),
    ("int16", TensorProto.INT16), ("int32", TensorProto.INT32), ("int64", TensorProto.INT64),
    ("float16", TensorProto.FLOAT16), ("float32", TensorProto.FLOAT), ("float64", TensorProto.DOUBLE),
    ("bfloat16", TensorProto.BFLOAT16), ("string", TensorProto.STRING),
]


def pass_through(name, types):
    nodes = [helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]) for t, _ in types]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(f"in_{t}", code, ["batch", 3]) for t, code in types],
        [helper.make_tensor_value_info(f"out_{t}", code, ["batch", 3]) for t, code in types],
    )
    model = helper.make_model(graph, producer_name="gantry-testdata", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    save(model, name)


def golden_extremes(name, types, values, more_outputs=None):
    vector = {"name": "extremes", "inputs": {}, "outputs": dict(more_outputs or {}), "tolerance": {"abs": 0.0, "rel": 0.0}}
    for t, _ in types:
        vector["inputs"][f"in_{t}"] = {"dtype": t, "shape": [1, 3], "data": values[t]}
        vector["outputs"][f"out_{t}"] = {"dtype": t, "shape": [1, 3], "data": values[t]}
    with open(os.path.join(HERE, f"{name}.golden.json"), "w") as f:
        json.dump([vector], f, indent=2, ensure_ascii=False)
        f.write("\n")


def all_types():
    types = [(t, code) for t, code in ALL_TYPES if t != "bfloat16"]
    pass_through("all_types", types)
    # BF16 alone, with its values widened to float32 (exactly) as a second output: Python
    # ONNX Runtime cannot read a BF16 output, so a reference compares the widened ones.
    graph = helper.make_graph(
        [helper.make_node("Identity", ["in_bfloat16"], ["out_bfloat16"]),
         helper.make_node("Cast", ["in_bfloat16"], ["as_float32"], to=TensorProto.FLOAT)],
        "bfloat16",
        [helper.make_tensor_value_info("in_bfloat16", TensorProto.BFLOAT16, ["batch", 3])],
        [helper.make_tensor_value_info("out_bfloat16", TensorProto.BFLOAT16, ["batch", 3]),
         helper.make_tensor_value_info("as_float32", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, producer_name="gantry-testdata", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    save(model, "bfloat16")
    # Extremes JSON can carry exactly: integers past 2^53, the float types' largest and
    # smallest values (bfloat16 and float16 given as the decimals of their exact values).
    values = {
        "bool": [True, False, True],
        "uint8": [0, 1, 255], "uint16": [0, 1, 65535], "uint32": [0, 1, 4294967295],
        "uint64": [0, 9007199254740993, 18446744073709551615],
        "int8": [-128, 0, 127], "int16": [-32768, 0, 32767], "int32": [-2147483648, 0, 2147483647],
        "int64": [-9223372036854775808, 9007199254740993, 9223372036854775807],
        "float16": [-65504.0, 5.960464477539063e-08, 0.0999755859375],
        "float32": [-3.4028234663852886e+38, 1.401298464324817e-45, 0.10000000149011612],
        "float64": [-1.7976931348623157e+308, 5e-324, 0.1],
        "bfloat16": [-3.3895313892515355e+38, 9.183549615799121e-41, 0.10009765625],
        "string": ["", "ünïcode", "x" * 300],
    }
    golden_extremes("all_types", types, values)
    golden_extremes("bfloat16", [("bfloat16", TensorProto.BFLOAT16)], values,
                    {"as_float32": {"dtype": "float32", "shape": [1, 3], "data": values["bfloat16"]}})


def image_pool():
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)],
        "image_pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, producer_name="gantry-testdata", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    save(model, "image_pool")


def identity_1m():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity_1m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 262144])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 262144])],
    )
    model = helper.make_model(graph, producer_name="gantry-testdata", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    save(model, "identity_1m")


def batch_mlp():
    shape = numpy_helper.from_array(np.array([512, 512], dtype=np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["w"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0 / 512]))]
    previous = "x"
    for i in range(8):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"m{i}"]))
        previous = "y" if i == 7 else f"h{i}"
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [previous]))
    graph = helper.make_graph(
        nodes, "batch_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 512])],
        initializer=[shape],
    )
    model = helper.make_model(graph, producer_name="gantry-testdata", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    save(model, "batch_mlp")


if __name__ == "__main__":
    import sys
    makers = {f.__name__: f for f in [tiny_linear, tiny_mlp, bench_compute, slow_compute, all_types, image_pool, identity_1m, batch_mlp]}
    for name in sys.argv[1:] or makers:
        makers[name]()
