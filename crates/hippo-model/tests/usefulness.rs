//! The salience gate's usefulness loss: its surprise target, and the recurrence target that
//! keeps it only where the offered token recurs after the segment (hippo-data's label).
#![allow(clippy::unwrap_used)]

mod common;

use common::{base, device, small};
use hippo_data::{SegmentBatch, Segments};
use hippo_model::{HippoFormer, HippoFormerConfig, SegmentTensors, UsefulnessTarget};

fn host(t: burn::tensor::Tensor<2>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// BCE of salience against `σ(nll − mean nll)·keep`, over the scored positions, on the host.
fn by_hand(sal: &[f64], nll: &[f64], scored: &[bool], keep: &[bool]) -> f64 {
    let n = scored.iter().filter(|&&s| s).count() as f64;
    let mean = nll
        .iter()
        .zip(scored)
        .filter(|(_, s)| **s)
        .map(|(x, _)| x)
        .sum::<f64>()
        / n;
    let mut sum = 0.0;
    for i in 0..sal.len() {
        if !scored[i] {
            continue;
        }
        let u = if keep[i] {
            1.0 / (1.0 + (mean - nll[i]).exp())
        } else {
            0.0
        };
        let s = sal[i].clamp(1e-6, 1.0 - 1e-6);
        sum -= u * s.ln() + (1.0 - u) * (1.0 - s).ln();
    }
    sum / n
}

#[test]
fn the_recurrence_target_keeps_surprise_only_where_the_token_recurs_within_the_horizon() {
    let dev = device();
    // One document whose tokens recur at irregular distances: 3 + i² mod 11.
    let doc: Vec<u32> = std::iter::once(2)
        .chain((1..60u32).map(|i| 3 + (i * i) % 11))
        .collect();
    let model = |target, horizon| {
        let cfg = small(HippoFormerConfig {
            use_lora: false,
            usefulness_target: target,
            usefulness_horizon: horizon,
            ..HippoFormerConfig::default()
        });
        HippoFormer::new(base(), cfg, &dev).unwrap()
    };
    let surprise = model(UsefulnessTarget::Surprise, 2048);
    let layout = surprise.segment_layout(12);
    let seg = Segments::get(&doc, layout, 1).unwrap();
    let batch = SegmentBatch::single(&seg, 0);
    let t = SegmentTensors::new(&batch, &dev);
    let out = surprise
        .forward(
            t.ids.clone(),
            t.valid.clone(),
            &surprise.empty_state(1, &dev),
        )
        .unwrap();
    let targets = &batch.targets[0];
    let scored: Vec<bool> = targets.iter().map(|&x| x >= 0).collect();
    let nll: Vec<f64> = host(HippoFormer::target_log_probs(&out, t.gather_targets()))
        .into_iter()
        .map(|x| -x)
        .collect();
    let sal = host(out.salience.salience.clone());
    let recurs = &batch.recurs_in[0];
    let value = |terms: hippo_model::model::LossTerms| {
        terms.usefulness.into_data().iter::<f64>().next().unwrap()
    };

    // Surprise: every scored position, with or without the label.
    let all = vec![true; sal.len()];
    let want = by_hand(&sal, &nll, &scored, &all);
    assert!((value(surprise.loss_on(&out, &t)) - want).abs() < 1e-5);
    assert!((value(surprise.loss(&out, t.targets.clone())) - want).abs() < 1e-5);

    // Recurrence: the same modules (same seed), so the same forward; the target is zero where
    // the token does not recur within the horizon.
    for horizon in [1usize, 5, 2048] {
        let m = model(UsefulnessTarget::Recurrence, horizon);
        let keep: Vec<bool> = recurs
            .iter()
            .map(|&r| r >= 0 && (r as usize) < horizon)
            .collect();
        let got = value(m.loss_on(&out, &t));
        let want = by_hand(&sal, &nll, &scored, &keep);
        assert!(
            (got - want).abs() < 1e-5,
            "horizon {horizon}: {got} vs {want}"
        );
        // Without the label there is no target: the term is 0.
        assert_eq!(value(m.loss(&out, t.targets.clone())), 0.0);
    }
    // The label is not trivial here: some targets recur within 5 later tokens, some later,
    // and some not at all.
    let scored_recurs: Vec<i64> = recurs
        .iter()
        .zip(&scored)
        .filter(|(_, s)| **s)
        .map(|(r, _)| *r)
        .collect();
    assert!(scored_recurs.iter().any(|&r| (0..5).contains(&r)));
    assert!(scored_recurs.iter().any(|&r| r >= 5));
    let horizons: Vec<f64> = [1usize, 5, 2048]
        .iter()
        .map(|&h| value(model(UsefulnessTarget::Recurrence, h).loss_on(&out, &t)))
        .collect();
    assert!(
        horizons[0] != horizons[1] && horizons[1] != horizons[2],
        "{horizons:?}"
    );
}

#[test]
fn a_zero_usefulness_horizon_is_rejected() {
    let cfg = HippoFormerConfig {
        usefulness_horizon: 0,
        ..HippoFormerConfig::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("usefulness_horizon"), "{e}");
    let toml = "usefulness_target = \"recurrence\"\nusefulness_horizon = 64\n";
    let c = HippoFormerConfig::default()
        .with_overlay(toml, "overlay")
        .unwrap();
    assert_eq!(c.usefulness_target, UsefulnessTarget::Recurrence);
    assert_eq!(c.usefulness_horizon, 64);
    assert!(
        HippoFormerConfig::default()
            .with_overlay("usefulness_target = \"sometimes\"", "overlay")
            .is_err()
    );
}
