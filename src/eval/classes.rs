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

#[cfg(test)]
mod tests {
    use super::*;

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
