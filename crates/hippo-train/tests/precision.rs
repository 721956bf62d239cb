//! Training with `precision = "bf16"` on the tiny Gemma 3 fixture: the loss falls as with f32
//! (not bit-identically), gradients reach the LoRA factors and every HippoFormer module, the
//! parameters and the optimizer state stay f32, the checkpoint round trip is exact and keeps
//! the precision, and an interrupted bf16 run resumes bit-identically.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};
use hippo_data::Split;
use hippo_gemma::Precision;
use hippo_model::checkpoint;
use hippo_model::{HippoFormer, HippoFormerConfig};
use hippo_train::trainer::{self, TrainOptions, TrainSummary, state};

mod common;

use common::{base, base_dir, corpus, device, logits, serial};

fn config(precision: Precision) -> HippoFormerConfig {
    HippoFormerConfig {
        precision,
        ..common::config()
    }
}

/// The shared options, without validation.
fn opts(dir: &Path) -> TrainOptions {
    TrainOptions {
        valid_batches: 0,
        ..common::opts(dir)
    }
}

fn run(precision: Precision, o: &TrainOptions) -> (HippoFormer, TrainSummary) {
    trainer::train_model(
        base(),
        &base_dir(),
        config(precision),
        corpus(8, Split::Train),
        None,
        o,
        &device(),
    )
    .unwrap()
}

/// Every parameter by path: stored dtype, composed dtype, raw values.
struct Collect {
    path: Vec<String>,
    out: Vec<(String, DType, DType, Vec<f32>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let raw = p.base();
        let v = raw.to_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        self.out
            .push((self.path.join("."), raw.dtype(), p.val().dtype(), v));
    }
}

fn params<M: Module>(m: &M) -> Vec<(String, DType, DType, Vec<f32>)> {
    let mut c = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    m.visit(&mut c);
    c.out
}

fn mean(x: &[(usize, f64)]) -> f64 {
    x.iter().map(|p| p.1).sum::<f64>() / x.len() as f64
}

#[test]
fn bf16_training_learns_like_f32_with_f32_masters_and_optimizer_state() {
    let _g = serial();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let o = |dir: &Path| TrainOptions {
        max_steps: Some(30),
        lr: 1e-2,
        lora_lr_mult: 1.0,
        ..opts(dir)
    };
    let (_, f) = run(Precision::F32, &o(a.path()));
    let (trained, s) = run(Precision::Bf16, &o(b.path()));
    assert_eq!(trained.base.precision(), Precision::Bf16);
    assert!(s.train_loss.iter().all(|(_, l)| l.is_finite()));
    let (f_first, f_last) = (mean(&f.train_lm[..5]), mean(&f.train_lm[25..]));
    let (b_first, b_last) = (mean(&s.train_lm[..5]), mean(&s.train_lm[25..]));
    eprintln!(
        "LM loss, first 5 → last 5 steps: f32 {f_first:.4} → {f_last:.4}, bf16 {b_first:.4} → {b_last:.4}"
    );
    assert!(
        b_last < b_first - 0.3,
        "bf16 LM loss did not fall: {:?}",
        s.train_lm
    );
    assert!(
        (b_last - f_last).abs() <= 0.1 * f_last.max(0.5),
        "bf16 ends at {b_last}, f32 at {f_last}"
    );
    assert_ne!(
        f.train_loss, s.train_loss,
        "bf16 trained bit-identically to f32"
    );

    // Masters stay f32 — LoRA factors, modules, norm gains; the frozen base matmul weights
    // are stored in bf16 (2-D, outside the adapters); adapted weights compose in f32.
    let trained_params = params(&trained);
    let mut frozen_bf16 = 0;
    for (p, stored, _, v) in &trained_params {
        let frozen_matmul = p.starts_with("base.") && !p.contains(".lora.") && {
            let is_norm = p.contains("norm");
            !is_norm
        };
        let want = if frozen_matmul {
            DType::BF16
        } else {
            DType::F32
        };
        assert_eq!(*stored, want, "{p}");
        frozen_bf16 += usize::from(frozen_matmul) * v.len();
    }
    let total: usize = trained_params.iter().map(|p| p.3.len()).sum();
    eprintln!("base weights stored in bf16: {frozen_bf16} of {total} parameter values");
    assert!(frozen_bf16 > total / 2);
    // An adapted weight (bf16 base + f32 factors) composes in f32; a plain frozen one is bf16.
    let attn = &trained.base.layers[0].self_attn;
    assert!(attn.q_proj.weight.adapter().is_some());
    assert_eq!(attn.q_proj.weight.base().dtype(), DType::BF16);
    assert_eq!(attn.q_proj.weight.val().dtype(), DType::F32);
    assert_eq!(attn.k_proj.weight.val().dtype(), DType::BF16);
    // Gradients reached the LoRA factors (both: B moves first, then A) and every module.
    let fresh = params(&HippoFormer::new(base(), config(Precision::Bf16), &device()).unwrap());
    let moved = |prefix: &str, suffix: &str| {
        trained_params
            .iter()
            .zip(&fresh)
            .filter(|((p, ..), _)| p.starts_with(prefix) && p.ends_with(suffix))
            .any(|((_, _, _, a), (_, _, _, b))| a != b)
    };
    for (prefix, suffix) in [
        ("base.", ".lora.a"),
        ("base.", ".lora.b"),
        ("gate.", ""),
        ("drift.", ""),
        ("memory.", ""),
        ("fusion.", ""),
    ] {
        assert!(
            moved(prefix, suffix),
            "no {prefix}…{suffix} parameter trained"
        );
    }
    // The optimizer state (AdamW moments of every trainable parameter) is f32: the file has
    // about the size of the f32 run's (bf16 moments would halve it; the record's metadata
    // varies by a few hundred bytes between runs, so sizes are compared within 5%).
    let size = |dir: &Path| {
        let ck = s.final_checkpoint.as_ref().unwrap().file_name().unwrap();
        std::fs::metadata(dir.join("checkpoints").join(ck).join(state::OPTIMIZER_FILE))
            .unwrap()
            .len()
    };
    let (fs, bs) = (size(a.path()), size(b.path()));
    assert!(
        fs > 10_000 && (bs as f64 - fs as f64).abs() < 0.05 * fs as f64,
        "optimizer.bpk: f32 run {fs} B, bf16 run {bs} B"
    );
}

#[test]
fn bf16_checkpoint_round_trip_is_exact_and_keeps_the_precision() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (trained, s) = run(
        Precision::Bf16,
        &TrainOptions {
            max_steps: Some(3),
            ..opts(tmp.path())
        },
    );
    let dir = s.final_checkpoint.unwrap();
    let saved = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(saved.contains("precision = \"bf16\""), "{saved}");
    let (loaded, _) = checkpoint::load(base(), &base_dir(), &dir, &device()).unwrap();
    assert_eq!(loaded.base.precision(), Precision::Bf16);
    let (a, b) = (logits(&trained), logits(&loaded));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "logits differ after a round trip"
    );
    // The precision is part of the config: resuming or loading it over an f32 model is refused.
    let f32_model = HippoFormer::new(base(), config(Precision::F32), &device()).unwrap();
    let err = checkpoint::load_into(
        f32_model,
        &dir,
        &checkpoint::BaseRef::of(&base_dir()).unwrap(),
    )
    .expect_err("a bf16 checkpoint loaded into an f32 model must be refused (the configs differ)");
    assert!(err.to_string().contains("config"), "{err}");
}

#[test]
fn interrupted_and_resumed_bf16_run_equals_uninterrupted() {
    let _g = serial();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let o = |dir: &Path| TrainOptions {
        grad_accum: 2,
        checkpoint_every: 6,
        ..opts(dir)
    };
    let (straight, sa) = run(Precision::Bf16, &o(a.path()));
    let (_, s1) = run(
        Precision::Bf16,
        &TrainOptions {
            stop_at_step: Some(6),
            ..o(b.path())
        },
    );
    assert_eq!(s1.steps, 6);
    let (resumed, sb) = run(
        Precision::Bf16,
        &TrainOptions {
            resume: true,
            ..o(b.path())
        },
    );
    assert_eq!(sb.resumed_from, Some(6));
    assert_eq!(resumed.base.precision(), Precision::Bf16);
    let (ta, tb) = (params(&straight), params(&resumed));
    assert_eq!(ta.len(), tb.len());
    for ((pa, _, _, va), (pb, _, _, vb)) in ta.iter().zip(&tb) {
        assert_eq!(pa, pb);
        let same = va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{pa} differs after resume");
    }
    let tail: Vec<f64> = sa.train_loss[6..].iter().map(|x| x.1).collect();
    let resumed_losses: Vec<f64> = sb.train_loss.iter().map(|x| x.1).collect();
    assert_eq!(tail, resumed_losses);
}
