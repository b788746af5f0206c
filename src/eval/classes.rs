//! Which classes do generated images fall into? A 1-nearest-neighbour
//! classifier on labelled real images, by cosine similarity of the pixels.
//!
//! Cosine rather than Euclidean distance: a blurry sample has little ink, and
//! in plain pixel distance its nearest training image is then usually a thin
//! "1" whatever digit it shows (DESIGN.md §1.8 notes the same bias), which
//! makes a varied set of samples look like one class.

use tch::{Kind, Tensor};

/// Labels of the nearest (cosine) reference image for each image of `x`
/// (`[N, ...]`), against `refs` `[M, ...]` with `labels` `[M]`.
pub fn nearest_neighbour_labels(x: &Tensor, refs: &Tensor, labels: &Tensor) -> Tensor {
    let _g = tch::no_grad_guard();
    let unit = |t: &Tensor| {
        let f = t
            .flatten(1, -1)
            .to_kind(Kind::Float)
            .to_device(tch::Device::Cpu);
        let n = f
            .square()
            .sum_dim_intlist(1, true, Kind::Float)
            .sqrt()
            .clamp_min(1e-8);
        f / n
    };
    let (a, b) = (unit(x), unit(refs));
    let mut out = Vec::new();
    let mut i = 0;
    let n = a.size()[0];
    while i < n {
        let len = 500.min(n - i);
        let sim = a.narrow(0, i, len).mm(&b.transpose(0, 1));
        out.push(
            labels
                .to_device(tch::Device::Cpu)
                .index_select(0, &sim.argmax(1, false)),
        );
        i += len;
    }
    Tensor::cat(&out, 0)
}

/// Histogram of `labels` over `k` classes.
pub fn histogram(labels: &Tensor, k: i64) -> Vec<i64> {
    Vec::<i64>::try_from(labels.bincount(None::<Tensor>, k).to_kind(Kind::Int64))
        .unwrap_or_default()
}

/// Total-variation distance `½ Σ_c |p_c − q_c|` between two class histograms
/// (counts, each normalised to sum 1; the shorter is padded with zeros): 0 for
/// the same class proportions, 1 for disjoint classes. `None` when either
/// histogram is empty.
pub fn total_variation(p: &[i64], q: &[i64]) -> Option<f64> {
    let (sp, sq) = (p.iter().sum::<i64>(), q.iter().sum::<i64>());
    if sp <= 0 || sq <= 0 {
        return None;
    }
    let at = |h: &[i64], i: usize| h.get(i).copied().unwrap_or(0) as f64;
    let k = p.len().max(q.len());
    Some(
        0.5 * (0..k)
            .map(|i| (at(p, i) / sp as f64 - at(q, i) / sq as f64).abs())
            .sum::<f64>(),
    )
}

/// Neighbours of the latent k-NN classifier ([`knn_accuracy`]) that `eval` uses.
pub const LATENT_KNN_K: i64 = 5;

/// How much class structure a latent space keeps (issue 29): the accuracy of
/// classifying each `query` point (`[N, d]`, labels `query_labels`) by a
/// majority vote of its `k` nearest `refs` (`[M, d]`, labels `ref_labels`) in
/// Euclidean distance; ties go to the class of the nearest of the tied.
/// Computed on the CPU in blocks of 500 queries. Chance is about 1/classes.
pub fn knn_accuracy(
    query: &Tensor,
    query_labels: &Tensor,
    refs: &Tensor,
    ref_labels: &Tensor,
    k: i64,
) -> f64 {
    knn_vote_accuracy(query, query_labels, refs, ref_labels, k, false)
}

/// [`knn_accuracy`] of a labelled set against itself, each point's own
/// entry left out (leave-one-out): e.g. how well a 2-D t-SNE map keeps the
/// classes.
pub fn knn_accuracy_loo(x: &Tensor, labels: &Tensor, k: i64) -> f64 {
    knn_vote_accuracy(x, labels, x, labels, k, true)
}

fn knn_vote_accuracy(
    query: &Tensor,
    query_labels: &Tensor,
    refs: &Tensor,
    ref_labels: &Tensor,
    k: i64,
    exclude_self: bool,
) -> f64 {
    let _g = tch::no_grad_guard();
    let cpu = |t: &Tensor| t.detach().to_device(tch::Device::Cpu);
    let q = cpu(query).flatten(1, -1).to_kind(Kind::Float);
    let r = cpu(refs).flatten(1, -1).to_kind(Kind::Float);
    let (n, m) = (q.size()[0], r.size()[0]);
    let k = k.clamp(1, (m - exclude_self as i64).max(1));
    if n == 0 || m == 0 {
        return f64::NAN;
    }
    let rl = Vec::<i64>::try_from(cpu(ref_labels).to_kind(Kind::Int64)).unwrap_or_default();
    let ql = Vec::<i64>::try_from(cpu(query_labels).to_kind(Kind::Int64)).unwrap_or_default();
    let mut correct = 0usize;
    let mut i = 0;
    while i < n {
        let len = 500.min(n - i);
        let mut d2 = crate::svgd::sq_dists(&q.narrow(0, i, len), &r);
        if exclude_self {
            // Row j of this block is point i + j: its own distance is +inf.
            let own = Tensor::arange_start(i, i + len, (Kind::Int64, tch::Device::Cpu));
            let _ = d2.scatter_(
                1,
                &own.unsqueeze(1),
                &Tensor::full([len, 1], f64::INFINITY, (Kind::Float, tch::Device::Cpu)),
            );
        }
        // Nearest first.
        let (_, idx) = d2.topk(k, 1, false, true);
        let idx = Vec::<i64>::try_from(idx.flatten(0, -1)).unwrap_or_default();
        for (row, nbrs) in idx.chunks(k as usize).enumerate() {
            let mut votes: Vec<(i64, usize)> = Vec::new();
            for &j in nbrs {
                let c = rl[j as usize];
                match votes.iter_mut().find(|(l, _)| *l == c) {
                    Some(v) => v.1 += 1,
                    None => votes.push((c, 1)),
                }
            }
            // `votes` is in order of first appearance, i.e. of the nearest
            // neighbour of each class: the first maximum breaks ties by distance.
            let best = votes.iter().map(|v| v.1).max().unwrap_or(0);
            let pred = votes.iter().find(|v| v.1 == best).map(|v| v.0);
            if pred == Some(ql[(i as usize) + row]) {
                correct += 1;
            }
        }
        i += len;
    }
    correct as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_accuracy_separates_clusters_and_falls_to_chance_on_noise() {
        tch::manual_seed(3);
        let opts = (Kind::Float, tch::Device::Cpu);
        // Two well-separated clusters, labels by cluster: perfect.
        let centres = Tensor::from_slice(&[0.0f32, 0.0, 10.0, 10.0]).view([2, 2]);
        let lab = |n: i64| Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)).remainder(2);
        let pts = |n: i64| centres.index_select(0, &lab(n)) + Tensor::randn([n, 2], opts);
        let acc = knn_accuracy(&pts(200), &lab(200), &pts(400), &lab(400), 5);
        assert!(acc > 0.99, "{acc}");
        // The same labels on structureless points: about chance (1/2).
        let noise = |n: i64| Tensor::randn([n, 2], opts);
        let acc = knn_accuracy(&noise(1000), &lab(1000), &noise(2000), &lab(2000), 5);
        assert!((acc - 0.5).abs() < 0.06, "{acc}");
        // Leave-one-out on a set against itself: two separated pairs of one
        // class each are all right; a point's own label never votes.
        let x = Tensor::from_slice(&[0.0f32, 0.1, 5.0, 5.1]).view([4, 1]);
        let l = Tensor::from_slice(&[0i64, 0, 1, 1]);
        assert_eq!(knn_accuracy_loo(&x, &l, 1), 1.0);
        let l = Tensor::from_slice(&[0i64, 1, 2, 3]);
        assert_eq!(knn_accuracy_loo(&x, &l, 1), 0.0);
        // Ties (k = 2, one of each class) go to the nearest.
        let refs = Tensor::from_slice(&[0.0f32, 1.0]).view([2, 1]);
        let rl = Tensor::from_slice(&[7i64, 3]);
        let q = Tensor::from_slice(&[0.9f32]).view([1, 1]);
        assert_eq!(
            knn_accuracy(&q, &Tensor::from_slice(&[3i64]), &refs, &rl, 2),
            1.0
        );
    }

    #[test]
    fn total_variation_hand_cases() {
        assert_eq!(total_variation(&[5, 5], &[50, 50]), Some(0.0));
        assert_eq!(total_variation(&[3, 0], &[0, 7]), Some(1.0));
        // p = (.5, .5, 0), q = (.25, .25, .5): ½(.25 + .25 + .5) = .5.
        assert_eq!(total_variation(&[2, 2], &[1, 1, 2]), Some(0.5));
        // One class of ten taking 30 % instead of 10 %, the rest shrunk evenly.
        let p = [30, 8, 8, 8, 8, 8, 8, 8, 8, 6];
        let q = [10; 10];
        let tv = total_variation(&p, &q).unwrap();
        assert!((tv - 0.2).abs() < 1e-12, "{tv}");
        assert_eq!(total_variation(&[], &[1]), None);
    }

    #[test]
    fn cosine_nearest_neighbour_ignores_intensity() {
        // Class 0: ink on the left half; class 1: a thin stroke on the right.
        let r0 = Tensor::zeros([1, 4, 4], (Kind::Float, tch::Device::Cpu));
        let _ = r0.narrow(2, 0, 2).fill_(1.0);
        let r1 = Tensor::zeros([1, 4, 4], (Kind::Float, tch::Device::Cpu));
        let _ = r1.narrow(2, 3, 1).narrow(1, 1, 2).fill_(1.0);
        let refs = Tensor::stack(&[r0.shallow_clone(), r1], 0);
        let labels = Tensor::from_slice(&[0i64, 1]);
        // A faint copy of class 0 is nearer the thin class-1 image in L2, but cosine gets it right.
        let faint = &r0 * 0.2;
        let d0 = (&faint - refs.get(0))
            .square()
            .sum(Kind::Float)
            .double_value(&[]);
        let d1 = (&faint - refs.get(1))
            .square()
            .sum(Kind::Float)
            .double_value(&[]);
        assert!(d1 < d0, "the example should fool Euclidean 1-NN");
        let got = nearest_neighbour_labels(&faint.unsqueeze(0), &refs, &labels);
        assert_eq!(histogram(&got, 2), vec![1, 0]);
    }
}
