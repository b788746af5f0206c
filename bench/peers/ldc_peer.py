"""LDC-VAE training step in plain PyTorch eager mode (the peer of `ldc-vae bench`).

Written from DESIGN.md §1 the way a researcher would write it from the paper,
with the project's defaults (noise_join add, prior weight w = 1, σ² = variance
over the batch of the residual norms floored at sigma2_min, scores with the
decoder's BatchNorm in inference mode, RBF kernel with the median bandwidth,
sampler target aggregate_kde on a FIFO bank, sampler bandwidth = the bank's),
three torch.optim.Adam optimizers. One step (Algorithm 1, §1.11):

  encoder particles (train BN) → decoder MSE step on detached z → Gibbs
  scores on the updated decoder (inference BN) → encoder SVGD step → sampler
  SVGD step toward the KDE of the bank.

Modes:
  bench  time steps on random images (PyTorch's default init), print JSON;
  equiv  start from weights saved by the Rust side, run steps on a given
         batch with the noise the Rust side draws (same seeds), save the
         weights and per-step statistics (tests/peer_equivalence.rs).
"""

import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

H_FLOOR = 1e-6


def sq_dists(a, b):
    """||a_i - b_j||², [n, m], clamped at 0."""
    a2 = a.square().sum(-1, keepdim=True)
    b2 = b.square().sum(-1, keepdim=True).T
    return (a2 + b2 - (a @ b.T) * 2.0).clamp_min(0.0)


@torch.no_grad()
def median_bandwidth(z):
    """h = med² / log n, med the (lower) median of the pairwise distances i < j."""
    n = z.shape[0]
    iu = torch.triu_indices(n, n, 1)
    med2 = sq_dists(z, z)[iu[0], iu[1]].median()
    return (med2 / math.log(n)).clamp_min(H_FLOOR)


@torch.no_grad()
def stein_direction(z, s, y, h):
    """Φ(y_j) = (1/n) Σ_i [K(z_i, y_j) s_i + (2/h)(y_j − z_i) K(z_i, y_j)]."""
    k = (-sq_dists(z, y) / h).exp()  # [n, m]
    kt = k.T
    drive = kt @ s
    repulse = (y * kt.sum(-1, keepdim=True) - kt @ z) * (h.reciprocal() * 2.0)
    return (drive + repulse) / z.shape[0]


@torch.no_grad()
def kde_score(y, bank, tau2):
    w = (-sq_dists(y, bank) / (2.0 * tau2)).softmax(1)
    return (w @ bank - y) / tau2


def stein_loss(y, phi):
    return -(y * phi.detach()).sum(-1).mean()


class LiteralAdam(torch.optim.Optimizer):
    """Adam with the update written as src/optim.rs writes it (m·β1 + g·(1−β1)
    where torch.optim.Adam uses lerp): the same maths, different float
    rounding. Only for `--adam literal` (the equivalence test's bitwise check)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["t"] += 1
                bc1, bc2 = 1.0 - b1 ** st["t"], 1.0 - b2 ** st["t"]
                st["m"].mul_(b1).add_(p.grad * (1.0 - b1))
                st["v"].mul_(b2).add_(p.grad.square() * (1.0 - b2))
                denom = (st["v"].sqrt() / math.sqrt(bc2)).add_(g["eps"])
                p.sub_(st["m"] / denom * (g["lr"] / bc1))


class Ldc:
    def __init__(self, a):
        self.a = a
        self.enc = common.Encoder(a.width, a.latent, noise=True)
        self.dec = common.Decoder(a.width, a.latent)
        self.smp = common.Encoder(a.width, a.latent)
        opt = torch.optim.Adam if a.adam == "torch" else LiteralAdam
        adam = lambda m: opt(m.parameters(), lr=a.lr, betas=(0.9, 0.999))  # noqa: E731
        self.opt_e, self.opt_d, self.opt_s = adam(self.enc), adam(self.dec), adam(self.smp)
        self.bank = torch.zeros(0, a.latent)

    def noise(self, stream, step, n):
        if self.a.seed is not None:
            common.reseed(self.a.seed, stream, step)
        return torch.randn(n, 1, 32, 32)

    def step(self, x, step):
        a, st = self.a, {}
        # 1. encoder particles, training-mode BN
        z = self.enc(x, self.noise("encoder_noise", step, x.shape[0]))
        # 2. decoder MSE step on detached particles
        self.dec.train()
        rec = F.mse_loss(self.dec(z.detach()), x)
        self.opt_d.zero_grad()
        rec.backward()
        self.opt_d.step()
        st["rec_mse"] = rec.item()
        # 3. Gibbs scores on the updated decoder, inference-mode BN
        self.dec.eval()
        zl = z.detach().requires_grad_(True)
        r2 = (x - self.dec(zl)).square().flatten(1).sum(1)
        if a.sigma2 is not None:  # a fixed σ² (config `ldc.sigma2 = <number>`)
            sigma2 = max(a.sigma2, a.sigma2_min)
        else:  # the paper's rule: variance over the batch of the residual norms
            sigma2 = max(r2.detach().clamp_min(0.0).sqrt().var().item(), a.sigma2_min)
        logp = -r2.sum() / sigma2 - zl.square().sum() * (a.prior_weight / 2.0)
        (scores,) = torch.autograd.grad(logp, zl)
        st["sigma2"] = sigma2
        # 4. encoder SVGD step
        zd = z.detach()
        h = median_bandwidth(zd)
        phi = stein_direction(zd, scores, zd, h)
        self.opt_e.zero_grad()
        stein_loss(z, phi).backward()
        self.opt_e.step()
        st["h"] = h.item()
        st["phi_norm"] = phi.norm(dim=-1).mean().item()
        # bank of recent encoder particles (FIFO)
        self.bank = torch.cat([self.bank, zd])[-a.kde_bank:]
        # 5. sampler step toward the KDE of the bank, bank bandwidth
        y = self.smp(self.noise("sampler_noise", step, a.sampler_particles))
        yd = y.detach()
        h_bank = median_bandwidth(self.bank)
        tau2 = a.kde_scale * h_bank.item() / 2.0
        phi_s = stein_direction(yd, kde_score(yd, self.bank, tau2), yd, h_bank)
        self.opt_s.zero_grad()
        stein_loss(y, phi_s).backward()
        self.opt_s.step()
        st["kde_tau2"] = tau2
        st["sampler_phi_norm"] = phi_s.norm(dim=-1).mean().item()
        return st


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["bench", "equiv"])
    p.add_argument("--width", type=float, default=0.0625)
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--sampler-particles", type=int, default=400)
    p.add_argument("--kde-bank", type=int, default=1000)
    p.add_argument("--kde-scale", type=float, default=1.0)
    p.add_argument("--prior-weight", type=float, default=1.0)
    p.add_argument("--sigma2-min", type=float, default=1e-4)
    p.add_argument("--sigma2", type=float, help="fixed σ² (default: the batch_norm_var rule)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--adam", choices=["torch", "literal"], default="torch",
                   help="torch.optim.Adam, or Adam written as src/optim.rs writes it")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--expect-params", type=int, help="our parameter count (asserted equal)")
    p.add_argument("--seed", type=int, help="reproduce the Rust run's noise (rng.rs streams)")
    p.add_argument("--init", help="equiv: initial weights (safetensors, encoder./decoder./sampler.)")
    p.add_argument("--input", help="equiv: the batch (safetensors, tensor `x`)")
    p.add_argument("--out", help="equiv: weights and per-step stats after the steps")
    a = p.parse_args()
    common.setup_threads(a.threads)
    m = Ldc(a)
    nets = {"encoder": m.enc, "decoder": m.dec, "sampler": m.smp}
    params = common.n_params(*nets.values())
    common.check_params(params, a.expect_params, "LDC-VAE (encoder + decoder + sampler)")
    if a.mode == "bench":
        x = torch.rand(a.batch, 1, 32, 32)
        ms = common.time_steps(lambda i: m.step(x, i)["rec_mse"], a.warmup, a.steps)
        common.report(ms=ms, params=params, warmup=a.warmup, steps=a.steps,
                      peak_gflops=common.matmul_gflops())
        return
    if not (a.init and a.input and a.out and a.seed is not None):
        sys.exit("error: equiv needs --init, --input, --out and --seed")
    init = common.load_safetensors(a.init)
    for prefix, net in nets.items():
        common.load_into(net, init, prefix)
    x = common.load_safetensors(a.input)["x"]
    out = {}
    for i in range(a.steps):
        for k, v in m.step(x, i).items():
            out[f"stats.{i}.{k}"] = torch.tensor(v, dtype=torch.float64)
    for prefix, net in nets.items():
        out.update(common.state_of(net, prefix))
    out["kde_bank"] = m.bank
    common.save_safetensors(out, a.out)
    common.report(params=params, steps=a.steps)


if __name__ == "__main__":
    main()
