#!/usr/bin/env python3
"""Compare two results of ldc-vae numerically (scripts/gpu-check.sh), with the
standard library only (the set-up's venv cannot `import torch`).

  compare_runs.py ckpt A.safetensors B.safetensors TOL
      every tensor of both checkpoints: largest |a - b| / max(|a|, 1e-12) per
      tensor against TOL (0: bit-identical); keys must match; wall times skipped.
  compare_runs.py eval A/eval.json B/eval.json TOL
      the FIDs and the MSEs of two evaluations: |a - b| / |a| <= TOL.

Prints one line per failing entry and a summary; exit status 1 on failure.
"""
import json
import math
import struct
import sys

FORMATS = {"F32": ("f", 4), "F64": ("d", 8), "I64": ("q", 8), "I32": ("i", 4),
           "U8": ("B", 1), "BF16": (None, 2), "F16": ("e", 2), "BOOL": ("?", 1)}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        fmt, size = FORMATS[v["dtype"]]
        a, b = v["data_offsets"]
        raw = body[a:b]
        if fmt is None:
            out[k] = raw
        else:
            out[k] = struct.unpack("<%d%s" % (len(raw) // size, fmt), raw)
    return out


def rel_diff(x, y):
    if isinstance(x, bytes):
        return 0.0 if x == y else math.inf
    if len(x) != len(y):
        return math.inf
    worst = 0.0
    for a, b in zip(x, y):
        if a == b:
            continue
        if isinstance(a, float) and (math.isnan(a) or math.isnan(b)):
            return math.inf
        worst = max(worst, abs(a - b) / max(abs(a), 1e-12))
    return worst


def leaves(v, prefix=""):
    if isinstance(v, dict):
        for k, x in v.items():
            yield from leaves(x, f"{prefix}{k}.")
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        yield prefix[:-1], float(v)


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("ckpt", "eval"):
        sys.exit(__doc__)
    kind, a, b, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    bad = 0
    worst = (0.0, None)
    if kind == "ckpt":
        x, y = read_safetensors(a), read_safetensors(b)
        if set(x) != set(y):
            print(f"keys differ: only in {a}: {sorted(set(x) - set(y))}; only in {b}: {sorted(set(y) - set(x))}")
            sys.exit(1)
        for k in sorted(x):
            if "wall" in k:  # elapsed seconds: differ by design
                continue
            d = rel_diff(x[k], y[k])
            worst = max(worst, (d, k), key=lambda t: t[0])
            if d > tol:
                bad += 1
                print(f"{k}: relative difference {d:.3e} > {tol:g}")
        what = f"{len(x)} tensors"
    else:
        x = dict(leaves(json.load(open(a))))
        y = dict(leaves(json.load(open(b))))
        keys = [k for k in x if k in y and ("fid" in k.split(".")[-1] or "mse" in k.split(".")[-1])
                and k.split(".")[-1] != "fid_samples"]
        if not keys:
            print("no FID/MSE entries in common")
            sys.exit(1)
        for k in sorted(keys):
            d = 0.0 if x[k] == y[k] else abs(x[k] - y[k]) / max(abs(x[k]), 1e-12)
            worst = max(worst, (d, k), key=lambda t: t[0])
            print(f"{k}: {x[k]!r} vs {y[k]!r} (relative {d:.2e})")
            if d > tol:
                bad += 1
        what = f"{len(keys)} numbers"
    print(f"compared {what} of {a} and {b}: largest relative difference {worst[0]:.3e}"
          f"{' (' + worst[1] + ')' if worst[1] else ''}, tolerance {tol:g}: {'FAIL' if bad else 'ok'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
