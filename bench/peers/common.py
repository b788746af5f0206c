"""Shared pieces of the PyTorch peers of `ldc-vae bench` (issue 7).

- the RAE reference architecture of DESIGN.md §2 at a width multiplier,
  written as plain `torch.nn` modules whose parameter names match the Rust
  var stores (`conv0.weight`, `bn0.running_mean`, ...), so weights saved by
  the Rust side load directly;
- SplitMix64 seeds exactly as `src/rng.rs` derives them, so the peer draws the
  same noise (same libtorch generator, same seed, same shape);
- a minimal safetensors reader/writer (numpy only);
- timing, peak RSS and the one-JSON-line report every peer prints last.
"""

import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn

# ---------------------------------------------------------------- rng (src/rng.rs)

M64 = (1 << 64) - 1
STREAMS = {"init": 1, "data_order": 2, "encoder_noise": 3, "sampler_noise": 4,
           "sampler_init": 5, "eval": 6, "model": 7}


def mix(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def derive(seed, stream, counter):
    return mix(mix(seed ^ mix(STREAMS[stream])) ^ counter)


def reseed(seed, stream, counter):
    """`rng::reseed`: libtorch's global generator from (seed, stream, counter)."""
    torch.manual_seed(derive(seed, stream, counter) >> 1)


# ---------------------------------------------------------------- nets (src/nets/mod.rs)


def scaled(c, width):
    """Channel count scaled by width, rounded half away from zero, at least 1."""
    return max(1, int(math.floor(c * width + 0.5)))


def bn(c):
    return nn.BatchNorm2d(c)  # PyTorch init: weight 1, bias 0; momentum 0.1, eps 1e-5


class Encoder(nn.Module):
    """Conv(4, s2, pad 1) → BN → ReLU with 128/256/512/1024·width channels,
    flatten, Linear → out. `noise=True`: the LDC encoder's extra conv on the
    image-shaped noise, added to the first conv's output (noise_join = add)."""

    def __init__(self, width, out_dim, channels=1, size=32, noise=False):
        super().__init__()
        ch = [scaled(c, width) for c in (128, 256, 512, 1024)]
        self.conv0 = nn.Conv2d(channels, ch[0], 4, 2, 1)
        self.noise_conv = nn.Conv2d(channels, ch[0], 4, 2, 1) if noise else None
        self.bn0 = bn(ch[0])
        self.conv1, self.bn1 = nn.Conv2d(ch[0], ch[1], 4, 2, 1), bn(ch[1])
        self.conv2, self.bn2 = nn.Conv2d(ch[1], ch[2], 4, 2, 1), bn(ch[2])
        self.conv3, self.bn3 = nn.Conv2d(ch[2], ch[3], 4, 2, 1), bn(ch[3])
        self.fc = nn.Linear(ch[3] * (size // 16) ** 2, out_dim)

    def forward(self, x, eps=None):
        h = self.conv0(x)
        if self.noise_conv is not None:
            h = h + self.noise_conv(eps)
        h = torch.relu(self.bn0(h))
        h = torch.relu(self.bn1(self.conv1(h)))
        h = torch.relu(self.bn2(self.conv2(h)))
        h = torch.relu(self.bn3(self.conv3(h)))
        return self.fc(h.flatten(1))


class Decoder(nn.Module):
    """Linear → 8·8·1024·width, ConvT(4, s2, pad 1) 512, 256 with BN/ReLU,
    ConvT(4, s1, pad 1) → C (33×33, cropped to 32×32), sigmoid."""

    def __init__(self, width, latent, channels=1, size=32):
        super().__init__()
        self.c0 = scaled(1024, width)
        c1, c2 = scaled(512, width), scaled(256, width)
        self.fc = nn.Linear(latent, self.c0 * 64)
        self.convt0, self.bn0 = nn.ConvTranspose2d(self.c0, c1, 4, 2, 1), bn(c1)
        self.convt1, self.bn1 = nn.ConvTranspose2d(c1, c2, 4, 2, 1), bn(c2)
        self.convt_out = nn.ConvTranspose2d(c2, channels, 4, 1, 1)
        self.size = size

    def forward(self, z):
        h = self.fc(z).view(-1, self.c0, 8, 8)
        h = torch.relu(self.bn0(self.convt0(h)))
        h = torch.relu(self.bn1(self.convt1(h)))
        out = self.convt_out(h)[:, :, : self.size, : self.size]
        return torch.sigmoid(out).contiguous()


def n_params(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


def check_params(got, expect, what):
    if expect is not None and got != expect:
        sys.exit(f"error: {what}: the peer has {got} parameters, ours {expect}: "
                 "the architectures differ")


# ---------------------------------------------------------------- safetensors

_DT = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}
_DT_INV = {np.dtype(v): k for k, v in _DT.items()}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DT:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {info['dtype']}")
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[base + a:base + b], dtype=_DT[info["dtype"]])
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


def save_safetensors(tensors, path):
    """Write `{name: tensor}` atomically (temp file + rename)."""
    header, chunks, off = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name].detach().cpu().contiguous().numpy()
        b = a.tobytes()
        header[name] = {"dtype": _DT_INV[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


def load_into(module, tensors, prefix):
    """Copy `prefix.<name>` tensors into a module's parameters and buffers."""
    missing = []
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            key = f"{prefix}.{name}"
            if key not in tensors:
                missing.append(key)
                continue
            if tuple(tensors[key].shape) != tuple(t.shape):
                sys.exit(f"error: {key}: shape {tuple(tensors[key].shape)} vs peer {tuple(t.shape)}")
            t.copy_(tensors[key])
    if missing:
        sys.exit(f"error: the weights file lacks {', '.join(missing[:5])} ...")


def state_of(module, prefix):
    return {f"{prefix}.{n}": t.detach().clone()
            for n, t in list(module.named_parameters()) + list(module.named_buffers())
            if not n.endswith("num_batches_tracked")}


# ---------------------------------------------------------------- timing and report


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def time_steps(step, warmup, steps):
    """Run `step(i)` warmup + steps times; return the timed durations in ms.
    `step` must return a Python number (forcing the work to finish)."""
    ms = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        step(i)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        if i >= warmup:
            ms.append((time.perf_counter() - t) * 1e3)
    return ms


def setup_threads(n):
    torch.set_num_threads(n)
    torch.manual_seed(0)


def matmul_gflops(size=2048, reps=5):
    """Achieved f32 matmul rate (GFLOP/s), median of `reps` after 2 warm-ups:
    the peak the step's GFLOP/s is compared with, measured in this process
    right after the steps (the same as `bench::matmul_gflops` on our side)."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    ms = time_steps(lambda _i: float(torch.mm(a, b)[0, 0]), 2, reps)
    return 2.0 * size ** 3 / (sorted(ms)[len(ms) // 2] / 1e3) / 1e9


def report(**kw):
    """The peer's result: one JSON object on the last line of stdout."""
    kw.setdefault("peak_rss_mib", peak_rss_mib())
    kw.setdefault("threads", torch.get_num_threads())
    kw.setdefault("torch", torch.__version__)
    print(json.dumps(kw), flush=True)
