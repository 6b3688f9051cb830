#!/usr/bin/env python3
"""Triton's own Python clients, unchanged and with their defaults, against a Gantry node.

Each check prints "ok: …"; the first failure prints "FAILED: …" and exits 1. Answers are
compared bit for bit with Python ONNX Runtime running the same model file on the same
inputs.

    triton_clients.py --http 127.0.0.1:8000 [--grpc 127.0.0.1:8001]
        --model NAME=VERSION=MODEL.onnx [--model …]

Models named all-types (every type but BF16 passed through) and bfloat16 get typed
inputs of every kind; any other model gets FP32 inputs of its declared shape. Over gRPC,
inference is also streamed (ModelStreamInfer), as `start_stream` does it.
"""
import argparse
import queue
import sys

import ml_dtypes
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

rng = np.random.default_rng(20261202)


def fail(what):
    print(f"FAILED: {what}", flush=True)
    sys.exit(1)


def check(condition, what):
    if not condition:
        fail(what)
    print(f"ok: {what}", flush=True)


NUMPY = {
    "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(int8)": np.int8,
    "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64,
    "tensor(string)": np.object_, "tensor(bfloat16)": ml_dtypes.bfloat16,
}


def values(kind, rows, finite):
    """Rows x 3 values of `kind`: extremes first, then random ones."""
    dtype = NUMPY[kind]
    n = rows * 3
    if dtype == np.bool_:
        flat = rng.integers(0, 2, n).astype(np.bool_)
    elif dtype == np.object_:
        words = [b"", "\u00fcn\u00efcode \u2713".encode(), b"x" * 300, b"tab\tand newline\n", b"plain"]
        flat = np.array([words[i % len(words)] for i in range(n)], dtype=np.object_)
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        flat[:2] = [info.min, info.max]
    else:
        info = ml_dtypes.finfo(dtype) if dtype == ml_dtypes.bfloat16 else np.finfo(dtype)
        flat = (rng.standard_normal(n) * 1000).astype(dtype)
        specials = [info.max, info.min, info.smallest_subnormal, -0.0, 0.1]
        if not finite:
            specials += [np.nan, np.inf, -np.inf]
        flat[: len(specials)] = np.array(specials[:n], dtype=np.float64).astype(dtype)
    return flat.reshape(rows, 3)


def inputs_for(session, rows, finite):
    feeds = {}
    for i in session.get_inputs():
        if i.type in NUMPY and i.name.startswith("in_"):
            feeds[i.name] = values(i.type, rows, finite)
        else:
            shape = [rows if not isinstance(d, int) else d for d in i.shape]
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def reference(session, feeds):
    """Python ONNX Runtime's outputs; BF16 ones as their exact float32 widening."""
    ort_feeds = {}
    for name, array in feeds.items():
        if array.dtype == ml_dtypes.bfloat16:
            ort_feeds[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array.view(np.uint16), 16)
        elif array.dtype == np.object_:
            # Python ONNX Runtime takes text: bytes objects would become "b'…'".
            ort_feeds[name] = np.vectorize(lambda b: b.decode("utf-8"), otypes=[np.object_])(array)
        else:
            ort_feeds[name] = array
    if any(isinstance(v, ort.OrtValue) for v in ort_feeds.values()):
        values_ = session.run_with_ort_values(None, ort_feeds)
        outputs = {}
        for o, v in zip(session.get_outputs(), values_):
            outputs[o.name] = None if o.type == "tensor(bfloat16)" else v.numpy()
        return outputs
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, ort_feeds)))


def same(got, want):
    """Bit for bit (strings compared as UTF-8 bytes)."""
    if want.dtype == np.object_ or got.dtype == np.object_:
        as_bytes = lambda a: [x if isinstance(x, bytes) else str(x).encode() for x in a.ravel()]
        return got.shape == want.shape and as_bytes(got) == as_bytes(want)
    return got.shape == want.shape and got.dtype == want.dtype and got.tobytes() == want.tobytes()


def compare(result, session, feeds, model, how, names=None):
    want = reference(session, feeds)
    for o in session.get_outputs():
        if names is not None and o.name not in names:
            continue
        got = result.as_numpy(o.name)
        if got is None:
            fail(f"{model} {how}: output {o.name} missing")
        if o.type == "tensor(bfloat16)":
            # Widened exactly, as the model's own as_float32 output does.
            check(same(got.astype(np.float32), want["as_float32"]), f"{model} {how}: {o.name} (BF16) bit-exact")
        else:
            check(same(got, want[o.name]), f"{model} {how}: {o.name} bit-exact with Python ONNX Runtime")


def http_checks(url, models):
    client = httpclient.InferenceServerClient(url=url)
    check(client.is_server_live(), "http: server live")
    check(client.is_server_ready(), "http: server ready")
    meta = client.get_server_metadata()
    check("binary_tensor_data" in meta["extensions"] and "statistics" in meta["extensions"],
          f"http: server metadata lists its extensions {meta['extensions']}")
    index = client.get_model_repository_index()
    served = {(m["name"], m["version"]) for m in index}
    for name, version, _ in models:
        check((name, version) in served, f"http: repository index lists {name} {version}")
    for name, version, path in models:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        check(client.is_model_ready(name), f"http: {name} ready")
        check(client.is_model_ready(name, model_version=version), f"http: {name} version {version} ready")
        meta = client.get_model_metadata(name)
        check([i["name"] for i in meta["inputs"]] == [i.name for i in session.get_inputs()]
              and [o["name"] for o in meta["outputs"]] == [o.name for o in session.get_outputs()]
              and meta["versions"] == [version],
              f"http: {name} metadata names its inputs, outputs and version")
        meta_v = client.get_model_metadata(name, model_version=version)
        check(meta_v == meta, f"http: {name} versioned metadata")
        try:
            client.get_model_metadata(name, model_version="0.0.0-absent")
            fail(f"http: {name} answered for a version it does not serve")
        except InferenceServerException as e:
            check("0.0.0-absent" in e.message(), f"http: an absent version is refused naming it ({e.message()})")
        config = client.get_model_config(name)
        check(config["name"] == name and [i["name"] for i in config["input"]] == [i.name for i in session.get_inputs()],
              f"http: {name} model config")

        # Defaults: binary inputs, all outputs as binary data.
        feeds = inputs_for(session, rows=2, finite=False)
        infer_inputs = []
        for i in session.get_inputs():
            array = feeds[i.name]
            t = httpclient.InferInput(i.name, list(array.shape), np_to_triton_dtype(array.dtype))
            t.set_data_from_numpy(array)
            infer_inputs.append(t)
        result = client.infer(name, infer_inputs, request_id="req-1")
        check(result.get_response()["id"] == "req-1", f"http: {name} answer carries the request id")
        check([o["name"] for o in result.get_response()["outputs"]] == [o.name for o in session.get_outputs()],
              f"http: {name} outputs in the model's order")
        compare(result, session, feeds, name, "binary (NaN, inf, extremes)")

        # JSON tensors both ways, a subset of outputs asked for in reverse order.
        feeds = inputs_for(session, rows=3, finite=True)
        json_inputs = []
        for i in session.get_inputs():
            array = feeds[i.name]
            t = httpclient.InferInput(i.name, list(array.shape), np_to_triton_dtype(array.dtype))
            t.set_data_from_numpy(array, binary_data=array.dtype == ml_dtypes.bfloat16)
            json_inputs.append(t)
        # Every output JSON can carry (BF16 only travels as binary), in reverse order.
        asked = [httpclient.InferRequestedOutput(o.name, binary_data=False)
                 for o in session.get_outputs()[::-1] if o.type != "tensor(bfloat16)"]
        result = client.infer(name, json_inputs, outputs=asked, model_version=version)
        returned = [o["name"] for o in result.get_response()["outputs"]]
        check(returned == [a.name() for a in asked], f"http: {name} returns the outputs asked for, in order ({returned})")
        check(all("data" in o for o in result.get_response()["outputs"]), f"http: {name} JSON outputs carry data")
        compare(result, session, feeds, name, "JSON", names=set(returned))

        stats = client.get_inference_statistics(name)
        s = stats["model_stats"][0]
        check(s["name"] == name and s["inference_stats"]["success"]["count"] >= 2 and s["execution_count"] >= 2,
              f"http: {name} statistics count its requests ({s['inference_stats']['success']['count']})")
    try:
        client.infer("no-such-model", [])
        fail("http: an unknown model answered")
    except InferenceServerException as e:
        check("no-such-model" in e.message(), f"http: an unknown model is refused ({e.message()})")
    all_stats = client.get_inference_statistics()
    check({s["name"] for s in all_stats["model_stats"]} >= {m[0] for m in models}, "http: statistics of every model")


def grpc_checks(url, models):
    client = grpcclient.InferenceServerClient(url=url)
    check(client.is_server_live(), "grpc: server live")
    check(client.is_server_ready(), "grpc: server ready")
    meta = client.get_server_metadata()
    check(meta.name == "gantry-agent", "grpc: server metadata")
    index = client.get_model_repository_index()
    served = {(m.name, m.version) for m in index.models}
    for name, version, path in models:
        check((name, version) in served, f"grpc: repository index lists {name} {version}")
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        check(client.is_model_ready(name, model_version=version), f"grpc: {name} ready")
        meta = client.get_model_metadata(name)
        check([o.name for o in meta.outputs] == [o.name for o in session.get_outputs()], f"grpc: {name} metadata")
        config = client.get_model_config(name)
        check(config.config.name == name, f"grpc: {name} model config")
        feeds = inputs_for(session, rows=2, finite=False)
        infer_inputs = []
        for i in session.get_inputs():
            array = feeds[i.name]
            t = grpcclient.InferInput(i.name, list(array.shape), np_to_triton_dtype(array.dtype))
            t.set_data_from_numpy(array)
            infer_inputs.append(t)
        result = client.infer(name, infer_inputs, request_id="g-1")
        check(result.get_response().id == "g-1", f"grpc: {name} answer carries the request id")
        check([o.name for o in result.get_response().outputs] == [o.name for o in session.get_outputs()],
              f"grpc: {name} outputs in the model's order")
        compare(result, session, feeds, name, "grpc (NaN, inf, extremes)")
        names = [o.name for o in session.get_outputs()][-2:]
        result = client.infer(name, infer_inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in names])
        check([o.name for o in result.get_response().outputs] == names, f"grpc: {name} returns the outputs asked for")
        stats = client.get_inference_statistics(name)
        check(stats.model_stats[0].inference_stats.success.count >= 2, f"grpc: {name} statistics")

        # Streaming: three requests on one stream, answered in order with their ids.
        answers = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for k in range(3):
            client.async_stream_infer(name, infer_inputs, request_id=f"s-{k}")
        streamed = [answers.get(timeout=30) for _ in range(3)]
        client.stop_stream()
        check(all(error is None for _, error in streamed), f"grpc: {name} stream answers without error")
        check([r.get_response().id for r, _ in streamed] == ["s-0", "s-1", "s-2"],
              f"grpc: {name} stream answers in order")
        compare(streamed[2][0], session, feeds, name, "grpc stream")
    try:
        client.infer("no-such-model", [])
        fail("grpc: an unknown model answered")
    except InferenceServerException as e:
        check("no-such-model" in e.message(), f"grpc: an unknown model is refused ({e.message()})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", required=True)
    parser.add_argument("--grpc")
    parser.add_argument("--model", action="append", required=True, help="NAME=VERSION=MODEL.onnx")
    args = parser.parse_args()
    models = [tuple(m.split("=", 2)) for m in args.model]
    http_checks(args.http, models)
    if args.grpc:
        grpc_checks(args.grpc, models)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
