//! The causality audit: perturb every token after position t of a multi-segment stream and check
//! that the logits at positions ≤ t do not change — through the gate, the drift calibrator, the
//! memory query, the writes (a segment is written only after it was read) and the fusion.
//!
//! A fresh model is the identity on top of its base (closed fusion, identity drift), which would
//! make the audit vacuous; [`open_for_audit`] first opens every path: fusion opening α ≠ 0, drift
//! A ≠ I and b ≠ 0, anchors calibrated and a zero drift threshold so every token is corrected,
//! the probability mixture's opening ≠ 0 and its gate's weights random.

use burn::module::Param;
use burn::tensor::{Bool, Device, Distribution, Int, Tensor, TensorData};
use serde::Serialize;

use crate::error::{HippoError, Result};
use crate::model::HippoFormer;

/// Outcome of one audit.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Streams × segments × segment length audited.
    pub shape: [usize; 3],
    /// The cut: tokens at global positions > `cut` were perturbed.
    pub cut: usize,
    /// Largest |Δlogit| at positions ≤ cut (must be 0).
    pub max_abs_diff_past: f32,
    /// Largest |Δlogit| at positions > cut (shows the perturbation reached the model).
    pub max_abs_diff_future: f32,
    /// Whether the past was bit-identical.
    pub passed: bool,
}

/// Opens every path of a (fresh) model so the audit can see a leak anywhere.
pub fn open_for_audit(
    mut model: HippoFormer,
    calib: (Tensor<3>, Tensor<2, Bool>),
) -> Result<HippoFormer> {
    let device = model.fusion.alpha.val().device();
    model.fusion.alpha = Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![0.7f32], [1]),
        &device,
    ));
    let d = model.drift.b.val().dims()[0];
    let a = Tensor::<2>::eye(d, &device)
        + Tensor::<2>::random([d, d], Distribution::Normal(0.0, 0.02), &device);
    model.drift.a = Param::from_tensor(a);
    model.drift.b = Param::from_tensor(Tensor::<1>::random(
        [d],
        Distribution::Normal(0.0, 0.05),
        &device,
    ));
    model.drift.drift_threshold = 0.0;
    model.drift.calibrate(calib.0, calib.1)?;
    // The probability path: an open mixture and a gate that reads its inputs.
    model.mix.opening = Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![0.6f32], [1]),
        &device,
    ));
    // The attention path: every layer reads an entry as if it were in context.
    let mut model = model.with_attention_weight(1.0);
    let [gi, go] = model.mix.gate.weight.val().dims();
    model.mix.gate.weight = Param::from_tensor(Tensor::<2>::random(
        [gi, go],
        Distribution::Normal(0.0, 0.2),
        &device,
    ));
    Ok(model)
}

fn logits_of_stream(
    model: &HippoFormer,
    streams: &[Vec<u32>],
    seg: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let b = streams.len();
    let n = streams[0].len();
    let mut state = model.empty_state(b, device);
    let mut per_row: Vec<Vec<f32>> = vec![Vec::new(); b];
    let mut start = 0;
    while start < n {
        let end = (start + seg).min(n);
        let flat: Vec<i64> = streams
            .iter()
            .flat_map(|s| s[start..end].iter().map(|&x| x as i64))
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, end - start]), device);
        let valid = Tensor::<2, Bool>::from_data(
            TensorData::new(vec![true; b * (end - start)], [b, end - start]),
            device,
        );
        let (out, next) = model.step(ids, valid, state)?;
        state = next;
        let logits = out.logits();
        let v = logits.dims()[2];
        let data = logits
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| HippoError::InvalidInput(format!("{e:?}")))?;
        let len = end - start;
        for (r, row) in per_row.iter_mut().enumerate() {
            row.extend_from_slice(&data[r * len * v..(r + 1) * len * v]);
        }
        start = end;
    }
    Ok(per_row)
}

/// Runs the audit on `streams` (equal-length token rows) read in segments of `seg` tokens,
/// perturbing every token after global position `cut` (in every row).
pub fn audit(
    model: &HippoFormer,
    streams: &[Vec<u32>],
    seg: usize,
    cut: usize,
    device: &Device,
) -> Result<AuditReport> {
    let n = streams.first().map(Vec::len).unwrap_or(0);
    if streams.is_empty() || streams.iter().any(|s| s.len() != n) || cut + 1 >= n || seg == 0 {
        return Err(HippoError::InvalidInput(format!(
            "audit needs equal-length streams longer than cut + 1 = {} (got {n}) and seg > 0",
            cut + 1
        )));
    }
    let vocab = model.base.config().vocab_size as u32;
    let perturbed: Vec<Vec<u32>> = streams
        .iter()
        .map(|s| {
            s.iter()
                .enumerate()
                .map(|(i, &x)| {
                    if i > cut {
                        (x + 1 + (i as u32 % 7)) % vocab
                    } else {
                        x
                    }
                })
                .collect()
        })
        .collect();
    let a = logits_of_stream(model, streams, seg, device)?;
    let b = logits_of_stream(model, &perturbed, seg, device)?;
    let v = model.base.config().vocab_size;
    let (mut past, mut future) = (0f32, 0f32);
    for (ra, rb) in a.iter().zip(&b) {
        for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
            let d = (x - y).abs();
            if i / v <= cut {
                past = past.max(d);
            } else {
                future = future.max(d);
            }
        }
    }
    Ok(AuditReport {
        shape: [streams.len(), n.div_ceil(seg), seg],
        cut,
        max_abs_diff_past: past,
        max_abs_diff_future: future,
        passed: past == 0.0,
    })
}
