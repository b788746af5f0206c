"""RAE-L2 in pythae 0.1.2 (the peer of `ldc-vae bench`).

pythae's `RAE_L2` model with custom encoder/decoder classes (pythae's
`BaseEncoder`/`BaseDecoder`) holding the RAE reference architecture of
DESIGN.md §2 at the given width (the same layers as ours: the parameter count
is checked against ours, `--expect-params`). One training step is what
pythae's `CoupledOptimizerTrainer.train_step` does per batch: the model's
forward (pythae's loss), then `_optimizers_step` (encoder loss backward,
decoder loss backward, both Adam steps), the decoder's Adam with
weight_decay = reg_weight, as `pythae.pipelines.TrainingPipeline` sets it up for
RAE_L2.
"""

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from pythae.data.datasets import BaseDataset  # noqa: E402
from pythae.models import RAE_L2, RAE_L2_Config  # noqa: E402
from pythae.models.base.base_utils import ModelOutput  # noqa: E402
from pythae.models.nn import BaseDecoder, BaseEncoder  # noqa: E402
from pythae.trainers import CoupledOptimizerTrainer, CoupledOptimizerTrainerConfig  # noqa: E402


class Encoder(BaseEncoder):
    def __init__(self, width, latent):
        BaseEncoder.__init__(self)
        self.net = common.Encoder(width, latent)

    def forward(self, x):
        return ModelOutput(embedding=self.net(x))


class Decoder(BaseDecoder):
    def __init__(self, width, latent):
        BaseDecoder.__init__(self)
        self.net = common.Decoder(width, latent)

    def forward(self, z):
        return ModelOutput(reconstruction=self.net(z))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=float, default=0.0625)
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--reg-weight", type=float, default=1e-7, help="decoder weight decay")
    p.add_argument("--embedding-weight", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--expect-params", type=int, help="our parameter count (asserted equal)")
    a = p.parse_args()
    common.setup_threads(a.threads)
    cfg = RAE_L2_Config(input_dim=(1, 32, 32), latent_dim=a.latent,
                        embedding_weight=a.embedding_weight, reg_weight=a.reg_weight)
    model = RAE_L2(cfg, encoder=Encoder(a.width, a.latent), decoder=Decoder(a.width, a.latent))
    params = common.n_params(model)
    common.check_params(params, a.expect_params, "RAE-L2 (encoder + decoder)")
    x = torch.rand(a.batch, 1, 32, 32)
    ds = BaseDataset(x, torch.zeros(a.batch))
    with tempfile.TemporaryDirectory() as out_dir:
        tcfg = CoupledOptimizerTrainerConfig(
            output_dir=out_dir, per_device_train_batch_size=a.batch,
            encoder_learning_rate=a.lr, decoder_learning_rate=a.lr,
            decoder_optimizer_params={"weight_decay": a.reg_weight}, no_cuda=True)
        trainer = CoupledOptimizerTrainer(model=model, train_dataset=ds, training_config=tcfg)
    # What trainer.train() → prepare_training() sets up, less its output folder and callbacks.
    trainer.set_encoder_optimizer()
    trainer.set_decoder_optimizer()
    model.train()
    inputs = {"data": x}

    def step(_i):
        out = trainer.model(inputs, epoch=1, dataset_size=a.batch, uses_ddp=False)
        trainer._optimizers_step(out)
        return out.encoder_loss.item() + out.decoder_loss.item()

    ms = common.time_steps(step, a.warmup, a.steps)
    common.report(ms=ms, params=params, warmup=a.warmup, steps=a.steps,
                  peak_gflops=common.matmul_gflops())


if __name__ == "__main__":
    main()
