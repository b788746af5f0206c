//! Pieces shared by the baseline autoencoders: one var store holding the
//! encoder and decoder (names `encoder.*`, `decoder.*`), one saveable Adam over
//! both, reconstruction losses in the reference's scalings, the state
//! helpers, and the [`Baseline`] trait that makes a [`Model`] of them.

use super::expost::{ExPost, GmmConfig};
use super::{load_var_store, var_store_state, BatchSource, Generation, Model, Spec, StepStats};
use crate::nets::sn::SnDecoder;
use crate::nets::{Decoder, Encoder, Geometry, NoiseJoin};
use crate::optim::Adam;
use crate::rng::{reseed, Stream};
use crate::samplers::{ExPostNet, SamplerKind};
use anyhow::Result;
use std::collections::HashMap;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// A baseline autoencoder: an encoder/decoder [`Core`] and a generation route
/// ([`PriorOrExPost`]). It states its name, its training step and its
/// encoding; every other [`Model`] method comes from the defaults below.
pub trait Baseline {
    /// The registry key (`vae`, `rae-l2`, ...).
    fn key(&self) -> &'static str;
    /// The core and the generation route ([`core_and_latents!`] writes these two
    /// for a model with fields `core` and `latents`).
    fn parts(&self) -> (&Core, &PriorOrExPost);
    fn parts_mut(&mut self) -> (&mut Core, &mut PriorOrExPost);
    fn core(&self) -> &Core {
        self.parts().0
    }
    fn latents(&self) -> &PriorOrExPost {
        self.parts().1
    }
    /// One training step on `x` ([`Model::train_step`]).
    fn step(&mut self, x: &Tensor, step: u64) -> Result<StepStats>;
    /// [`Model::encode`] of `x`, already on the model's device, without
    /// gradient (default: the deterministic encoder's output, RAE and WAE).
    fn encode_here(&self, x: &Tensor) -> Tensor {
        self.core().encoder.forward(x, None, false)
    }
    /// The latents an ex-post density is fitted on (default: [`Baseline::encode_here`]).
    fn fit_latents(&self, x: &Tensor) -> Tensor {
        self.encode_here(x)
    }
}

impl<T: Baseline> Model for T {
    fn name(&self) -> &'static str {
        self.key()
    }
    fn latent_dim(&self) -> i64 {
        self.core().latent
    }
    fn device(&self) -> Device {
        self.core().device
    }
    fn train_step(&mut self, x: &Tensor, step: u64) -> Result<StepStats> {
        self.step(x, step)
    }
    fn encode(&self, x: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        self.encode_here(&x.to_device(self.core().device))
    }
    fn decode(&self, z: &Tensor) -> Tensor {
        self.core().decode(z)
    }
    fn sample_latents(&self, n: i64) -> Result<Tensor> {
        let c = self.core();
        self.latents().sample(n, c.latent, c.device, self.key())
    }
    fn sampler_name(&self) -> String {
        self.latents().name()
    }
    fn generation(&self) -> Generation {
        self.latents().generation()
    }
    fn post_training_steps(&self) -> u64 {
        self.latents().post_training_steps()
    }
    fn post_training_step(&mut self, data: &mut dyn BatchSource, i: u64) -> Result<StepStats> {
        let key = self.key();
        match self.latents() {
            PriorOrExPost::Prior => {
                anyhow::bail!("{key} samples from its prior: it has no post-training phase")
            }
            PriorOrExPost::Gmm(_) => {
                let z = encode_all(data, self.core().device, |x| {
                    let _g = tch::no_grad_guard();
                    self.fit_latents(x)
                });
                match self.parts_mut().1 {
                    PriorOrExPost::Gmm(e) => e.fit(&z),
                    _ => unreachable!("matched above"),
                }
            }
            PriorOrExPost::Net(net) => {
                // The net's bank: the frozen encoder's latents of (a seeded
                // subset of) the training images, encoded once per process.
                if net.needs_bank() {
                    let size = net.bank_size();
                    let seed = self.core().seed;
                    let dev = self.core().device;
                    let z = crate::samplers::bank::encode_bank(data, size, seed, |_, x| {
                        self.fit_latents(&x.to_device(dev))
                    })?;
                    if let PriorOrExPost::Net(n) = self.parts_mut().1 {
                        n.set_bank(&z);
                    }
                }
                match self.parts_mut().1 {
                    PriorOrExPost::Net(n) => n.step(i),
                    _ => unreachable!("matched above"),
                }
            }
        }
    }
    fn generator_bank(&self, data: &mut dyn BatchSource) -> Result<Option<Tensor>> {
        match self.latents() {
            PriorOrExPost::Net(net) => {
                let dev = self.core().device;
                crate::samplers::bank::encode_bank(
                    data,
                    net.bank_size(),
                    self.core().seed,
                    |_, x| self.fit_latents(&x.to_device(dev)),
                )
                .map(Some)
            }
            _ => Ok(None),
        }
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut v = self.core().state();
        match self.latents() {
            PriorOrExPost::Gmm(e) => v.extend(e.state()),
            PriorOrExPost::Net(n) => v.extend(n.state()),
            PriorOrExPost::Prior => {}
        }
        v
    }
    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        let (core, latents) = self.parts_mut();
        core.load_state(t)?;
        match latents {
            PriorOrExPost::Gmm(e) => e.load_state(t)?,
            PriorOrExPost::Net(n) => n.load_state(t)?,
            PriorOrExPost::Prior => {}
        }
        Ok(())
    }
    fn scale_lr(&mut self, factor: f64) {
        // NaN rollback in the post-training phase too: a sampler net's rate.
        let (core, latents) = self.parts_mut();
        core.opt.lr *= factor;
        if let PriorOrExPost::Net(n) = latents {
            n.scale_lr(factor);
        }
    }
}

/// [`Baseline::parts`] and [`Baseline::parts_mut`] of a model whose fields
/// are `core: Core` and `latents: PriorOrExPost`.
macro_rules! core_and_latents {
    () => {
        fn parts(&self) -> (&Core, &PriorOrExPost) {
            (&self.core, &self.latents)
        }
        fn parts_mut(&mut self) -> (&mut Core, &mut PriorOrExPost) {
            (&mut self.core, &mut self.latents)
        }
    };
}
pub(crate) use core_and_latents;

/// The RAE reference decoder (DESIGN §2), plain or spectrally normalised.
pub enum AnyDecoder {
    Plain(Decoder),
    Sn(SnDecoder),
}

impl AnyDecoder {
    pub fn forward(&self, z: &Tensor, train: bool) -> Tensor {
        match self {
            AnyDecoder::Plain(d) => d.forward(z, train),
            AnyDecoder::Sn(d) => d.forward(z, train),
        }
    }
}

/// Where a baseline draws latents: `N(0, I)`, an ex-post density fitted on
/// the encoder's latents after training (the RAEs; VAE, CV-VAE and WAE-MMD
/// with `baselines.vae_sampler = gmm`; any of them with `sampler.kind = gmm |
/// gaussian`), or a sampler net trained on them (`sampler.kind = ot | mmd |
/// svgd`, crate::samplers).
pub enum PriorOrExPost {
    Prior,
    Gmm(ExPost),
    Net(Box<ExPostNet>),
}

impl PriorOrExPost {
    /// Always the ex-post GMM.
    pub fn ex_post(spec: &Spec) -> PriorOrExPost {
        PriorOrExPost::Gmm(ExPost::new(&spec.baselines.gmm, spec.seed))
    }

    /// The route `sampler.kind` names, `default` (the model's own) for `model`.
    pub fn chosen(spec: &Spec, core: &Core, default: PriorOrExPost) -> PriorOrExPost {
        let s = spec.sampler;
        match s.kind {
            SamplerKind::Model => default,
            SamplerKind::Gmm => Self::ex_post(spec),
            SamplerKind::Gaussian => {
                let one = GmmConfig {
                    gmm_components: 1,
                    ..spec.baselines.gmm.clone()
                };
                PriorOrExPost::Gmm(ExPost::new(&one, spec.seed))
            }
            SamplerKind::Prior => PriorOrExPost::Prior,
            SamplerKind::Ot | SamplerKind::Mmd | SamplerKind::Svgd => {
                PriorOrExPost::Net(Box::new(ExPostNet::new(
                    s,
                    s.kind.objective().expect("a sampler net's kind"),
                    spec.seed,
                    core.geo,
                    spec.net.width,
                    core.latent,
                    spec.lr,
                    (spec.beta1, spec.beta2),
                    core.device,
                )))
            }
        }
    }

    pub fn generation(&self) -> Generation {
        match self {
            PriorOrExPost::Gmm(_) => Generation::ExPostGmm,
            PriorOrExPost::Net(_) => Generation::SamplerNet,
            PriorOrExPost::Prior => Generation::Prior,
        }
    }

    pub fn sample(&self, n: i64, latent: i64, device: Device, model: &str) -> Result<Tensor> {
        match self {
            PriorOrExPost::Gmm(e) => e.sample(n, device, model),
            PriorOrExPost::Net(net) => Ok(net.sample(n).to_device(device)),
            PriorOrExPost::Prior => Ok(Tensor::randn([n, latent], (Kind::Float, device))),
        }
    }

    pub fn name(&self) -> String {
        match self {
            PriorOrExPost::Gmm(e) => e.name(),
            PriorOrExPost::Net(net) => net.name(),
            PriorOrExPost::Prior => "N(0, I) prior".into(),
        }
    }

    /// One post-training step (the fit) with an ex-post density, the net's
    /// steps with a sampler net, none without.
    pub fn post_training_steps(&self) -> u64 {
        match self {
            PriorOrExPost::Gmm(_) => 1,
            PriorOrExPost::Net(net) => net.steps(),
            PriorOrExPost::Prior => 0,
        }
    }
}

/// Encoder + decoder in one var store, one Adam over both.
pub struct Core {
    pub geo: Geometry,
    pub device: Device,
    pub seed: u64,
    pub latent: i64,
    pub vs: VarStore,
    pub encoder: Encoder,
    pub decoder: AnyDecoder,
    pub opt: Adam,
}

impl Core {
    /// Encoder with `enc_out` outputs (latent, or 2·latent for mean and
    /// log-variance heads), decoder from the latent; weights drawn from the
    /// run's `Init` stream.
    pub fn new(
        cfg: &Spec,
        geo: Geometry,
        device: Device,
        enc_out: i64,
        spectral_norm: bool,
    ) -> Core {
        let d = cfg.net.latent_dim;
        let w = cfg.net.width;
        reseed(cfg.seed, Stream::Init, 0);
        let vs = VarStore::new(device);
        let g = cfg.bn_groups;
        let encoder =
            Encoder::new(&(vs.root() / "encoder"), geo, w, enc_out, NoiseJoin::None).bn_groups(g);
        let decoder = if spectral_norm {
            AnyDecoder::Sn(SnDecoder::new(&(vs.root() / "decoder"), geo, w, d).bn_groups(g))
        } else {
            AnyDecoder::Plain(
                Decoder::new(&(vs.root() / "decoder"), geo, w, d, cfg.net.channels_last)
                    .bn_groups(g),
            )
        };
        let opt = Adam::new(&vs, cfg.lr, cfg.beta1, cfg.beta2);
        Core {
            geo,
            device,
            seed: cfg.seed,
            latent: d,
            vs,
            encoder,
            decoder,
            opt,
        }
    }

    /// The step's encoder noise ε ~ N(0, I) `[n, latent]`, from the run's
    /// encoder-noise stream at `step` (exact resume); under MPI this worker's
    /// rows of the global batch's draw.
    pub fn encoder_noise(&self, n: i64, step: u64) -> Tensor {
        reseed(self.seed, Stream::EncoderNoise, step);
        crate::dist::randn_rows(n, &[self.latent], (Kind::Float, self.device))
    }

    /// Step Adam on `loss`; the step's statistics: `loss`, the `terms` (values
    /// of tensors of this step), and `rec_mse` of `xhat` against `x`.
    pub fn step_on(
        &mut self,
        loss: &Tensor,
        terms: &[(&'static str, &Tensor)],
        x: &Tensor,
        xhat: &Tensor,
    ) -> StepStats {
        self.opt.backward_step(loss);
        let mse = val(&xhat.detach().mse_loss(x, tch::Reduction::Mean));
        let mut stats = vec![("loss", val(loss))];
        stats.extend(terms.iter().map(|(k, t)| (*k, val(t))));
        stats.push(("rec_mse", mse));
        StepStats(stats)
    }

    pub fn decode(&self, z: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        self.decoder.forward(&z.to_device(self.device), false)
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut v = var_store_state(&self.vs, "model");
        v.extend(self.opt.state("adam"));
        v
    }

    pub fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        load_var_store(&mut self.vs, "model", t)?;
        self.opt.load_state("adam", t)
    }
}

/// Per-sample squared error summed over pixels and channels, `[N]`.
pub fn sse(x: &Tensor, xhat: &Tensor) -> Tensor {
    (x - xhat)
        .square()
        .flatten(1, -1)
        .sum_dim_intlist(1, false, Kind::Float)
}

/// Per-sample mean squared error over pixels and channels, `[N]` (the RAE
/// reference's `mse` reconstruction term).
pub fn per_pixel_mse(x: &Tensor, xhat: &Tensor) -> Tensor {
    (x - xhat)
        .square()
        .flatten(1, -1)
        .mean_dim(1, false, Kind::Float)
}

/// Per-sample Σ over pixels of the channel-mean squared error, `[N]`: the
/// reference VAE's reconstruction term (Keras `mse` reduces the channel axis,
/// `K.sum` the rest). Equals [`sse`] for one channel, `sse / 3` for RGB.
pub fn pixel_sum_channel_mean(x: &Tensor, xhat: &Tensor) -> Tensor {
    (x - xhat)
        .square()
        .mean_dim(1, false, Kind::Float)
        .flatten(1, -1)
        .sum_dim_intlist(1, false, Kind::Float)
}

/// A tensor's scalar value as f64.
pub fn val(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// Encode a whole training set in chunks (inference mode) with `enc`.
pub fn encode_all(
    data: &mut dyn BatchSource,
    device: Device,
    mut enc: impl FnMut(&Tensor) -> Tensor,
) -> Tensor {
    let n = data.num_train();
    let chunk = 500;
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let x = data.chunk(start, len).to_device(device);
        parts.push(enc(&x).to_device(Device::Cpu));
        start += len;
    }
    Tensor::cat(&parts, 0)
}

#[cfg(test)]
pub mod testing {
    //! Helpers for the models' tests: a tiny config and synthetic data.
    use super::*;
    use crate::config::Config;

    /// MNIST geometry, width 1/16, latent 4, batch of 16. Also sets libtorch
    /// to one intra-op thread: on a shared 2-core machine its thread pool spins
    /// and makes these tiny nets ~50× slower.
    pub fn tiny_config(model: &str) -> Config {
        tch::set_num_threads(1);
        let mut c = Config::load(None, None, &[format!("model={model}")]).unwrap();
        c.net.width = 0.0625;
        c.net.latent_dim = 4;
        c.net.channels_last = false;
        c.train.lr = 1e-3;
        c.seed = 3;
        c
    }

    /// A fixed batch of simple synthetic images: blurry blobs at random places.
    pub fn blobs(n: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let g = Geometry::MNIST;
        let ax = Tensor::arange(g.size, (Kind::Float, Device::Cpu)).view([1, 1, -1, 1]);
        let ay = ax.view([1, 1, 1, -1]);
        let cx = Tensor::rand([n, 1, 1, 1], (Kind::Float, Device::Cpu)) * 16.0 + 8.0;
        let cy = Tensor::rand([n, 1, 1, 1], (Kind::Float, Device::Cpu)) * 16.0 + 8.0;
        let r2 = (ax - cx).square() + (ay - cy).square();
        (-r2 / 18.0).exp()
    }

    /// A batch source over a fixed tensor of images.
    pub struct Fixed(pub Tensor);

    impl BatchSource for Fixed {
        fn batch(&mut self, i: u64) -> Tensor {
            let n = self.0.size()[0];
            let b = 16.min(n);
            let start = ((i as i64) * b) % (n - b + 1);
            self.0.narrow(0, start, b)
        }
        fn num_train(&self) -> i64 {
            self.0.size()[0]
        }
        fn chunk(&mut self, start: i64, len: i64) -> Tensor {
            self.0.narrow(0, start, len)
        }
    }

    /// Train `steps` steps on one fixed batch; (first loss, mean of the last 5).
    pub fn train_fixed(m: &mut dyn crate::models::Model, x: &Tensor, steps: u64) -> (f64, f64) {
        let mut losses = Vec::new();
        for s in 0..steps {
            let st = m.train_step(x, s).unwrap();
            assert!(st.non_finite().is_none(), "{st:?}");
            losses.push(st.get("loss").unwrap());
        }
        let tail = &losses[losses.len() - 5..];
        (losses[0], tail.iter().sum::<f64>() / 5.0)
    }

    /// state → fresh model → load_state gives identical decodes and encodes
    /// (and, after one more identical step, identical weights: the optimizer
    /// state travelled too).
    pub fn assert_round_trip(
        a: &mut dyn crate::models::Model,
        b: &mut dyn crate::models::Model,
        x: &Tensor,
    ) {
        let st: HashMap<String, Tensor> =
            a.state().into_iter().map(|(k, t)| (k, t.copy())).collect();
        b.load_state(&st).unwrap();
        let z = Tensor::randn([5, a.latent_dim()], (Kind::Float, Device::Cpu));
        assert!(a.decode(&z).equal(&b.decode(&z)));
        a.train_step(x, 100).unwrap();
        b.train_step(x, 100).unwrap();
        let (sa, sb) = (a.state(), b.state());
        assert_eq!(sa.len(), sb.len());
        for ((ka, ta), (kb, tb)) in sa.iter().zip(&sb) {
            assert_eq!(ka, kb);
            assert!(ta.equal(tb), "{ka} differs after a step from loaded state");
        }
    }
}
