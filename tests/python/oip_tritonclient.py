#!/usr/bin/env python3
"""tritonclient (HTTP and gRPC) against a running pixguard: metadata, health, infer in both input modes with
JSON and binary tensors, compressed requests, output selection, and the protocol's errors. Scores must equal
`pixguard score` for the same transactions within 1e-6. Called by tests/oip.rs with the server's URL.
"""
import argparse
import csv
import json
import subprocess
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL = "pix-fraud"
FIELDS = [  # name, datatype, optional (the server's FIELD_INPUTS)
    ("end_to_end_id", "BYTES", False), ("accepted_at", "BYTES", False), ("amount_cents", "INT64", False),
    ("initiation_form", "BYTES", False), ("purpose", "BYTES", False), ("payer.ispb", "BYTES", False),
    ("payer.account_type", "BYTES", False), ("payer.person_type", "BYTES", False),
    ("payer.account_opened_at", "BYTES", False), ("payer.device.registered", "BOOL", False),
    ("payer.device.first_seen_at", "BYTES", True), ("payee.ispb", "BYTES", False),
    ("payee.account_type", "BYTES", False), ("payee.person_type", "BYTES", False),
    ("payee.key_type", "BYTES", True), ("payee.key_created_at", "BYTES", True),
    ("payee.account_opened_at", "BYTES", True), ("payee.dict_stats.settlements_90d", "INT64", True),
    ("payee.dict_stats.fraud_markers_30d", "INT64", True), ("payee.dict_stats.infractions_open", "INT64", True),
    ("payee.dict_stats.mule_marker", "BOOL", True), ("history.payee_first_time", "BOOL", False),
    ("history.payer_tx_1h", "INT64", False), ("history.payer_amount_24h_cents", "INT64", False),
    ("history.amount_zscore_90d", "FP64", True),
]
ABSENT = {"BYTES": "", "INT64": -1, "FP64": float("nan"), "BOOL": False}


def flatten(tx, prefix=""):
    out = {}
    for k, v in tx.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def field_inputs(txs, binary, module=None):
    module = module or httpclient
    rows = [flatten(t) for t in txs]
    inputs = []
    for name, dt, _ in FIELDS:
        values = [r.get(name, ABSENT[dt]) for r in rows]
        if dt == "BYTES":
            array = np.array([v.encode() for v in values], dtype=np.object_)
        elif dt == "INT64":
            array = np.array(values, dtype=np.int64)
        elif dt == "FP64":
            array = np.array(values, dtype=np.float64)
        else:
            array = np.array(values, dtype=np.bool_)
        inp = module.InferInput(name, [len(rows)], dt)
        if module is httpclient:
            inp.set_data_from_numpy(array, binary_data=binary)
        else:
            inp.set_data_from_numpy(array)
        inputs.append(inp)
    return inputs


def expect(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)


def expect_error(client, inputs, needle):
    try:
        client.infer(MODEL, inputs)
    except InferenceServerException as e:
        expect(needle in str(e), f"error {e!s} lacks {needle!r}")
        return
    expect(False, f"request with {needle!r} was accepted")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="HTTP host:port")
    p.add_argument("--grpc-url", required=True, help="gRPC host:port")
    p.add_argument("--pixguard", required=True)
    p.add_argument("--model", required=True)
    args = p.parse_args()
    client = httpclient.InferenceServerClient(url=args.url)

    expect(client.is_server_live(), "server live")
    expect(client.is_server_ready(), "server ready")
    expect(client.is_model_ready(MODEL), "model ready")
    expect(not client.is_model_ready("no-such-model"), "unknown model is not ready")
    meta = client.get_server_metadata()
    expect(meta["name"] == "pixguard" and "binary_tensor_data" in meta["extensions"], f"server metadata {meta}")
    model = client.get_model_metadata(MODEL)
    names = {i["name"]: i for i in model["inputs"]}
    expect(len(names) == len(FIELDS) + 2 and names["features"]["shape"][0] == -1, f"inputs {names.keys()}")
    expect([o["name"] for o in model["outputs"]] == ["score", "decision", "reasons"], "outputs")
    version = model["versions"][0]
    expect(client.get_model_metadata(MODEL, model_version=version)["name"] == MODEL, "versioned metadata")

    traffic = subprocess.run([args.pixguard, "synth", "--rows", "1000", "--seed", "4242", "--fraud-rate", "0.05"],
                             check=True, capture_output=True).stdout
    txs = [json.loads(l)["transaction"] for l in traffic.decode().splitlines()]
    plain = "".join(json.dumps(t) + "\n" for t in txs).encode()
    offline = [json.loads(l) for l in subprocess.run([args.pixguard, "score", "--model", args.model],
                                                     input=plain, check=True, capture_output=True).stdout.decode().splitlines()]
    want = np.array([o["score"] for o in offline], dtype=np.float64)
    want_decisions = [o["decision"] for o in offline]

    for rows in (1, 1000):
        for binary in (False, True):
            outputs = [httpclient.InferRequestedOutput("score", binary_data=binary),
                       httpclient.InferRequestedOutput("decision", binary_data=binary)]
            result = client.infer(MODEL, field_inputs(txs[:rows], binary), outputs=outputs, model_version=version)
            score = result.as_numpy("score").reshape(-1).astype(np.float64)
            decision = [d.decode() if isinstance(d, bytes) else d for d in result.as_numpy("decision").reshape(-1)]
            worst = float(np.abs(score - want[:rows]).max())
            expect(worst <= 1e-6, f"fields rows={rows} binary={binary}: max diff {worst}")
            expect(decision == want_decisions[:rows], f"fields rows={rows} binary={binary}: decisions differ")
            print(f"fields mode, {rows} rows, binary={binary}: max |oip - pixguard score| = {worst:.2e}")

    # Compressed requests (Content-Encoding), as tritonclient sends them; the answer comes back plain.
    for algorithm in ("gzip", "deflate"):
        result = client.infer(MODEL, field_inputs(txs, True), request_compression_algorithm=algorithm,
                              response_compression_algorithm=algorithm)
        worst = float(np.abs(result.as_numpy("score").reshape(-1).astype(np.float64) - want).max())
        expect(worst <= 1e-6, f"request_compression_algorithm={algorithm}: max diff {worst}")
        print(f"request_compression_algorithm={algorithm}, 1000 rows: max |oip - pixguard score| = {worst:.2e}")

    # Reasons: a BYTES output of JSON text, a list on every HOLD and REJECT, empty on ALLOW.
    for binary in (False, True):
        result = client.infer(MODEL, field_inputs(txs, binary),
                              outputs=[httpclient.InferRequestedOutput("reasons", binary_data=binary)])
        reasons = [json.loads(r.decode() if isinstance(r, bytes) else r) for r in result.as_numpy("reasons").reshape(-1)]
        flagged = [i for i, d in enumerate(want_decisions) if d != "ALLOW"]
        expect(flagged and all(reasons[i] and all(r["contribution"] > 0 for r in reasons[i]) for i in flagged),
               f"binary={binary}: a HOLD or REJECT row without reasons")
        expect(all(not reasons[i] for i, d in enumerate(want_decisions) if d == "ALLOW"),
               f"binary={binary}: reasons on an ALLOW row that did not ask")
        print(f"reasons, binary={binary}: on all {len(flagged)} HOLD/REJECT rows of 1000, none on ALLOW")

    features = subprocess.run([args.pixguard, "features", "--model", args.model, "--format", "csv"],
                              input=plain, check=True, capture_output=True).stdout.decode()
    spec = json.loads(open(f"{args.model}/model.json").read())["features"]
    table = list(csv.DictReader(features.splitlines()))
    numeric = np.array([[float(r[f["name"]]) for f in spec["numeric"]] for r in table], dtype=np.float32)
    categories = np.array([[int(r[f["name"]]) for f in spec["categorical"]] for r in table], dtype=np.int64)
    for rows in (1, 1000):
        for binary in (False, True):
            f = httpclient.InferInput("features", list(numeric[:rows].shape), "FP32")
            f.set_data_from_numpy(numeric[:rows], binary_data=binary)
            c = httpclient.InferInput("categories", list(categories[:rows].shape), "INT64")
            c.set_data_from_numpy(categories[:rows], binary_data=binary)
            result = client.infer(MODEL, [f, c], outputs=[httpclient.InferRequestedOutput("score", binary_data=binary)])
            expect(result.as_numpy("decision") is None, "only the requested output is returned")
            worst = float(np.abs(result.as_numpy("score").reshape(-1) - want[:rows]).max())
            expect(worst <= 1e-6, f"features mode rows={rows} binary={binary}: max diff {worst}")
            print(f"features mode, {rows} rows, binary={binary}: max |oip - pixguard score| = {worst:.2e}")

    good = field_inputs(txs[:2], False)
    wrong_type = httpclient.InferInput("amount_cents", [2], "FP64")
    wrong_type.set_data_from_numpy(np.array([1.0, 2.0]))
    expect_error(client, [i for i in good if i.name() != "amount_cents"] + [wrong_type], "amount_cents")
    short = httpclient.InferInput("amount_cents", [3], "INT64")
    short.set_data_from_numpy(np.array([1, 2, 3], dtype=np.int64))
    expect_error(client, [i for i in good if i.name() != "amount_cents"] + [short], "amount_cents")
    unknown = httpclient.InferInput("shoe_size", [2], "INT64")
    unknown.set_data_from_numpy(np.array([40, 41], dtype=np.int64))
    expect_error(client, good + [unknown], "unknown input 'shoe_size'")
    expect_error(client, [i for i in good if i.name() != "purpose"], "missing input 'purpose'")
    f = httpclient.InferInput("features", [1, 3], "FP32")
    f.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    expect_error(client, [f], "features")
    print("errors: wrong datatype, shape mismatch, unknown input, missing input all refused by name")

    # gRPC: the same checks through tritonclient.grpc (raw_input_contents / raw_output_contents).
    g = grpcclient.InferenceServerClient(url=args.grpc_url)
    expect(g.is_server_live() and g.is_server_ready() and g.is_model_ready(MODEL), "grpc health")
    expect(g.get_server_metadata().name == "pixguard", "grpc server metadata")
    gmeta = g.get_model_metadata(MODEL, model_version=version)
    expect(len(gmeta.inputs) == len(FIELDS) + 2 and [o.name for o in gmeta.outputs] == ["score", "decision", "reasons"],
           "grpc model metadata")
    for rows in (1, 1000):
        result = g.infer(MODEL, field_inputs(txs[:rows], True, grpcclient), model_version=version)
        score = result.as_numpy("score").reshape(-1).astype(np.float64)
        decision = [d.decode() for d in result.as_numpy("decision").reshape(-1)]
        worst = float(np.abs(score - want[:rows]).max())
        expect(worst <= 1e-6 and decision == want_decisions[:rows], f"grpc fields rows={rows}: max diff {worst}")
        print(f"grpc fields mode, {rows} rows: max |oip - pixguard score| = {worst:.2e}")
        f = grpcclient.InferInput("features", list(numeric[:rows].shape), "FP32")
        f.set_data_from_numpy(numeric[:rows])
        c = grpcclient.InferInput("categories", list(categories[:rows].shape), "INT64")
        c.set_data_from_numpy(categories[:rows])
        result = g.infer(MODEL, [f, c], outputs=[grpcclient.InferRequestedOutput("score")])
        expect(result.as_numpy("decision") is None, "grpc output selection")
        worst = float(np.abs(result.as_numpy("score").reshape(-1) - want[:rows]).max())
        expect(worst <= 1e-6, f"grpc features rows={rows}: max diff {worst}")
        print(f"grpc features mode, {rows} rows: max |oip - pixguard score| = {worst:.2e}")
    for algorithm in ("gzip", "deflate"):
        result = g.infer(MODEL, field_inputs(txs, True, grpcclient), compression_algorithm=algorithm)
        worst = float(np.abs(result.as_numpy("score").reshape(-1).astype(np.float64) - want).max())
        expect(worst <= 1e-6, f"grpc compression_algorithm={algorithm}: max diff {worst}")
        print(f"grpc compression_algorithm={algorithm}, 1000 rows: max |oip - pixguard score| = {worst:.2e}")
    good = field_inputs(txs[:2], True, grpcclient)
    bad_type = grpcclient.InferInput("amount_cents", [2], "FP64")
    bad_type.set_data_from_numpy(np.array([1.0, 2.0]))
    for inputs, needle in [
        ([i for i in good if i.name() != "amount_cents"] + [bad_type], "amount_cents"),
        ([i for i in good if i.name() != "purpose"], "missing input 'purpose'"),
    ]:
        try:
            g.infer(MODEL, inputs)
            expect(False, f"grpc request with {needle!r} was accepted")
        except InferenceServerException as e:
            expect(needle in e.message() and e.status() == "StatusCode.INVALID_ARGUMENT", f"grpc error {e}")
    print("grpc errors: wrong datatype and missing input refused as INVALID_ARGUMENT, by name")

    # Model configuration and statistics: what perf_analyzer reads from Triton.
    config = client.get_model_config(MODEL)
    inputs = {i["name"]: i for i in config["input"]}
    expect(config["max_batch_size"] == 1000 and "dynamic_batching" in config, f"config {config}")
    expect(inputs["features"]["dims"] == [len(spec["numeric"])] and inputs["features"]["data_type"] == "TYPE_FP32",
           f"config features {inputs['features']}")
    expect(inputs["end_to_end_id"]["data_type"] == "TYPE_STRING" and all(i["optional"] for i in inputs.values()),
           "config field inputs")
    gconfig = g.get_model_config(MODEL).config
    expect(gconfig.max_batch_size == 1000 and [i.name for i in gconfig.input] == list(inputs)
           and gconfig.input[2].data_type == 9 and gconfig.input[2].dims == [1], f"grpc config {gconfig}")
    too_many = field_inputs(txs[:1] * 1001, True)
    expect_error(client, too_many, "batch-size must be <= 1000")

    before = client.get_inference_statistics(MODEL)["model_stats"][0]
    client.infer(MODEL, field_inputs(txs[:3], True))
    after = client.get_inference_statistics(MODEL)["model_stats"][0]
    gafter = g.get_inference_statistics(MODEL).model_stats[0]
    grew = lambda key: after["inference_stats"][key]["count"] - before["inference_stats"][key]["count"]
    expect(after["inference_count"] - before["inference_count"] == 3, f"inference_count {before} -> {after}")
    expect(grew("success") == 1 and grew("queue") == 1 and grew("compute_infer") == 1, f"stats {after}")
    expect(grew("fail") == 0 and after["inference_stats"]["fail"]["count"] >= 1, "failed requests counted")
    expect(after["inference_stats"]["success"]["ns"] > after["inference_stats"]["compute_infer"]["ns"] > 0,
           "request time covers compute time")
    expect(gafter.inference_count >= after["inference_count"] and gafter.version == version, f"grpc stats {gafter}")
    # Per batch size: the executions add up, and the 3-row request ran as one batch of 3 (nothing
    # else was in flight).
    sizes = lambda stat: {b["batch_size"]: b["compute_infer"]["count"] for b in stat["batch_stats"]}
    grown = {n: c - sizes(before).get(n, 0) for n, c in sizes(after).items() if c != sizes(before).get(n, 0)}
    expect(sum(sizes(after).values()) == after["execution_count"] and grown == {3: 1}, f"batch stats {after}")
    gsizes = {b.batch_size: b.compute_infer.count for b in gafter.batch_stats}
    expect(sum(gsizes.values()) == gafter.execution_count and gsizes.get(3, 0) >= 1, f"grpc batch stats {gafter}")
    print("model config (HTTP, gRPC), batch-size limit, statistics (HTTP, gRPC): as Triton reports them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
