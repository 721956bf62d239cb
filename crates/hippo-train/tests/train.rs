//! The training loop on the tiny Gemma 3 fixture: learning, checkpoints and pruning, exact
//! resume, LoRA learning rate, frozen base, NaN stop, failed checkpoint write, metrics fields,
//! model checkpoint round trip and base fingerprint check.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use hippo_data::Split;
use hippo_model::checkpoint::{self, BaseRef};
use hippo_model::{HippoError, HippoFormer, HippoFormerConfig};
use hippo_train::trainer::{self, TrainError, TrainOptions, state};
use hippo_train::{Schedule, StepMetrics};

mod common;

use common::{base, base_dir, config, corpus, device, logits, opts, serial};

fn run(o: &TrainOptions) -> Result<(HippoFormer, trainer::TrainSummary), TrainError> {
    trainer::train_model(
        base(),
        &base_dir(),
        config(),
        corpus(8, Split::Train),
        Some(corpus(3, Split::Valid)),
        o,
        &device(),
    )
}

/// Every float tensor (raw, un-reparameterised values) by path.
struct Collect {
    path: Vec<String>,
    out: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let v = p
            .base()
            .to_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        self.out.push((self.path.join("."), v));
    }
}

fn tensors<M: Module>(m: &M) -> Vec<(String, Vec<f32>)> {
    let mut c = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    m.visit(&mut c);
    c.out
}

fn read_metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn loss_decreases_on_repetitive_text() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let o = TrainOptions {
        max_steps: Some(40),
        lr: 1e-2,
        lora_lr_mult: 1.0,
        ..opts(tmp.path())
    };
    let (_, s) = run(&o).unwrap();
    assert_eq!(s.steps, 40);
    let lm: Vec<f64> = s.train_lm.iter().map(|x| x.1).collect();
    let first = lm[..5].iter().sum::<f64>() / 5.0;
    let last = lm[lm.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        last < first - 0.3,
        "LM loss did not fall: first {first:.3}, last {last:.3} ({lm:?})"
    );
}

#[test]
fn checkpoints_are_pruned_and_metrics_have_every_field() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let o = TrainOptions {
        max_steps: Some(7),
        checkpoint_every: 2,
        keep_last: 2,
        valid_every: 3,
        ..opts(tmp.path())
    };
    let (_, s) = run(&o).unwrap();
    let root = tmp.path().join("checkpoints");
    let steps: Vec<usize> = state::list_checkpoints(&root)
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(steps, vec![6, 7]);
    assert_eq!(s.final_checkpoint, Some(root.join("step-00000007")));
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary dirs left: {leftovers:?}");
    for f in [
        "model.bpk",
        "config.toml",
        "meta.json",
        "optimizer.bpk",
        "memory.safetensors",
        "trainer.json",
    ] {
        assert!(root.join("step-00000007").join(f).is_file(), "{f} missing");
    }
    assert!(tmp.path().join("config.toml").is_file());

    let lines = read_metrics(tmp.path());
    assert_eq!(lines.len(), 7);
    for (i, l) in lines.iter().enumerate() {
        let m: StepMetrics = serde_json::from_value(l.clone()).unwrap();
        assert_eq!(m.step, i + 1);
        for k in [
            "step",
            "loss",
            "lm",
            "salience_weighted",
            "sparsity",
            "memory_util",
            "drift_reg",
            "mean_salience",
            "tagged_ratio",
            "buffer_util",
            "mean_drift",
            "grad_norm",
            "lr",
            "lora_lr",
            "tokens_per_sec",
        ] {
            assert!(l.get(k).is_some_and(|v| v.is_number()), "{k} in {l}");
        }
        let validated = [3, 6, 7].contains(&m.step);
        assert_eq!(m.valid_loss.is_some(), validated, "step {}", m.step);
        assert_eq!(m.valid_ppl.is_some(), validated);
        if let (Some(loss), Some(ppl)) = (m.valid_loss, m.valid_ppl) {
            assert!((ppl - loss.exp()).abs() < 1e-6 * ppl);
        }
        assert!((m.lora_lr - 0.1 * m.lr).abs() < 1e-15);
    }
    assert_eq!(s.valid.len(), 3);
    assert!(lines[6]["buffer_util"].as_f64().unwrap() > 0.0);
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    let _g = serial();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let base_opts = |dir: &Path| TrainOptions {
        grad_accum: 2,
        checkpoint_every: 6,
        ..opts(dir)
    };
    let (straight, sa) = run(&base_opts(a.path())).unwrap();
    let (_, s1) = run(&TrainOptions {
        stop_at_step: Some(6),
        ..base_opts(b.path())
    })
    .unwrap();
    assert_eq!(s1.steps, 6);
    let (resumed, sb) = run(&TrainOptions {
        resume: true,
        ..base_opts(b.path())
    })
    .unwrap();
    assert_eq!(sb.resumed_from, Some(6));
    assert_eq!(sb.steps, 12);
    let (ta, tb) = (tensors(&straight), tensors(&resumed));
    assert_eq!(ta.len(), tb.len());
    for ((pa, va), (pb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(pa, pb);
        let same = va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{pa} differs after resume");
    }
    // The losses of steps 7..12 match too, and the metrics file holds 12 lines.
    let tail: Vec<f64> = sa.train_loss[6..].iter().map(|x| x.1).collect();
    let resumed_losses: Vec<f64> = sb.train_loss.iter().map(|x| x.1).collect();
    assert_eq!(tail, resumed_losses);
    assert_eq!(read_metrics(b.path()).len(), 12);
}

#[test]
fn lora_factors_and_the_drift_correction_get_their_own_learning_rates() {
    let _g = serial();
    let model = HippoFormer::new(base(), config(), &device().autodiff()).unwrap();
    let groups = trainer::LrGroups::new().unwrap();
    let o = TrainOptions {
        lora_lr_mult: 0.1,
        drift_lr_mult: 0.01,
        ..TrainOptions::default()
    };
    let rates = trainer::learning_rates(1e-3, &o, &groups);
    struct Check<'a> {
        path: Vec<String>,
        rates: &'a burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate,
        lora: usize,
        drift: usize,
        other: usize,
    }
    impl ModuleVisitor for Check<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let path = self.path.join(".");
            let lr = self.rates.lr_from_param(p.id, Some(&path));
            if path.contains(".lora.") {
                assert!((lr - 1e-4).abs() < 1e-15, "{path}: {lr}");
                self.lora += 1;
            } else if path == "drift.a" || path == "drift.b" {
                assert!((lr - 1e-5).abs() < 1e-15, "{path}: {lr}");
                self.drift += 1;
            } else {
                assert!((lr - 1e-3).abs() < 1e-15, "{path}: {lr}");
                self.other += 1;
            }
        }
    }
    let mut c = Check {
        path: Vec::new(),
        rates: &rates,
        lora: 0,
        drift: 0,
        other: 0,
    };
    model.visit(&mut c);
    // 4 layers × (q_proj, v_proj) × (a, b).
    assert_eq!(c.lora, 16);
    assert_eq!(c.drift, 2);
    assert!(c.other > 16);
}

#[test]
fn base_weights_are_unchanged_and_adapters_move() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = run(&TrainOptions {
        max_steps: Some(4),
        ..opts(tmp.path())
    })
    .unwrap();
    let before = tensors(&base());
    let after = tensors(&model.base);
    let base_only: Vec<_> = after
        .iter()
        .filter(|(p, _)| !p.contains(".lora."))
        .collect();
    assert_eq!(base_only.len(), before.len());
    for ((pa, va), (pb, vb)) in before.iter().zip(base_only) {
        assert_eq!(pa, pb);
        assert!(
            va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "base weight {pa} changed"
        );
    }
    let lora_b_moved = after
        .iter()
        .filter(|(p, _)| p.ends_with(".lora.b"))
        .all(|(_, v)| v.iter().any(|x| *x != 0.0));
    assert!(lora_b_moved, "LoRA B factors did not train");
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_checkpoint() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    run(&TrainOptions {
        checkpoint_every: 2,
        stop_at_step: Some(2),
        ..opts(tmp.path())
    })
    .unwrap();
    let err = run(&TrainOptions {
        checkpoint_every: 2,
        resume: true,
        lr: 1e30,
        warmup_ratio: 0.0,
        schedule: Schedule::Constant,
        clip_norm: None,
        ..opts(tmp.path())
    })
    .expect_err("training with lr = 1e30 must fail");
    let last = match &err {
        TrainError::NonFinite {
            last_checkpoint, ..
        } => last_checkpoint.clone(),
        other => panic!("expected NonFinite, got {other}"),
    };
    let root = tmp.path().join("checkpoints");
    assert_eq!(last, Some(root.join("step-00000002")));
    assert!(err.to_string().contains("step-00000002"), "{err}");
    let steps: Vec<usize> = state::list_checkpoints(&root)
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(steps, vec![2]);
    let (m, meta) =
        checkpoint::load(base(), &base_dir(), &root.join("step-00000002"), &device()).unwrap();
    assert_eq!(meta.step, 2);
    assert!(
        tensors(&m)
            .iter()
            .all(|(_, v)| v.iter().all(|x| x.is_finite()))
    );
}

#[test]
fn a_failed_checkpoint_write_keeps_the_previous_one() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("checkpoints");
    std::fs::create_dir_all(&root).unwrap();
    // A file where the step-4 checkpoint's temporary directory must go.
    std::fs::write(root.join(".tmp-step-00000004"), b"in the way").unwrap();
    let err = run(&TrainOptions {
        max_steps: Some(4),
        checkpoint_every: 2,
        ..opts(tmp.path())
    })
    .expect_err("the step-4 checkpoint cannot be written");
    assert!(matches!(err, TrainError::Io { .. }), "{err}");
    let steps: Vec<usize> = state::list_checkpoints(&root)
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(steps, vec![2]);
    checkpoint::load(base(), &base_dir(), &root.join("step-00000002"), &device()).unwrap();
}

#[test]
fn model_checkpoint_round_trip_is_exact_and_excludes_the_base() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (trained, s) = run(&TrainOptions {
        max_steps: Some(3),
        ..opts(tmp.path())
    })
    .unwrap();
    let dir = s.final_checkpoint.unwrap();
    let (loaded, meta) = checkpoint::load(base(), &base_dir(), &dir, &device()).unwrap();
    assert_eq!(meta.step, 3);
    assert!(
        loaded.drift.anchor_count() > 0,
        "drift anchors not restored"
    );
    let (a, b) = (logits(&trained), logits(&loaded));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "logits differ after a round trip"
    );

    // Only the trainable part is in the file: no frozen base weight.
    let saved = checkpoint::checkpoint_tensors(&loaded).unwrap();
    assert!(
        saved
            .iter()
            .all(|(p, _)| !p.starts_with("base.") || p.contains(".lora."))
    );
    let trainable_bytes: usize = saved.iter().map(|(_, n)| 4 * n).sum();
    let base_bytes: usize = tensors(&base()).iter().map(|(_, v)| 4 * v.len()).sum();
    let size = std::fs::metadata(dir.join(checkpoint::MODEL_FILE))
        .unwrap()
        .len() as usize;
    assert!(
        size < trainable_bytes + 64 * 1024,
        "model.bpk is {size} bytes, trainables {trainable_bytes}"
    );
    assert!(size < base_bytes, "model.bpk {size} ≥ base {base_bytes}");

    // Another base (same weights, different config.json bytes) is refused.
    let other = tmp.path().join("other-base");
    std::fs::create_dir_all(&other).unwrap();
    for e in std::fs::read_dir(base_dir()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, other.join(p.file_name().unwrap())).unwrap();
    }
    let cfg = std::fs::read_to_string(other.join("config.json")).unwrap();
    std::fs::write(other.join("config.json"), format!("{cfg}\n")).unwrap();
    let other_base = hippo_gemma::load(other.to_str().unwrap(), &device())
        .unwrap()
        .model;
    let err = checkpoint::load(other_base, &other, &dir, &device()).expect_err("other base");
    assert!(matches!(err, HippoError::Checkpoint { .. }), "{err}");
    assert!(
        err.to_string().contains("trained over the base model"),
        "{err}"
    );
    assert_ne!(
        BaseRef::of(&other).unwrap().fingerprint,
        BaseRef::of(&base_dir()).unwrap().fingerprint
    );
}

/// No dropout (the device RNG is process-global, so its draws would depend on thread timing).
fn dp_config(aux: bool) -> HippoFormerConfig {
    let w = if aux { 1.0 } else { 0.0 };
    HippoFormerConfig {
        salience_dropout: 0.0,
        fusion_dropout: 0.0,
        salience_weighted_weight: 0.5 * w,
        sparsity_weight: 0.1 * w,
        memory_util_weight: 0.01 * w,
        drift_reg_weight: 0.001 * w,
        ..config()
    }
}

fn run_with(cfg: HippoFormerConfig, o: &TrainOptions) -> (HippoFormer, trainer::TrainSummary) {
    trainer::train_model(
        base(),
        &base_dir(),
        cfg,
        corpus(8, Split::Train),
        None,
        o,
        &device(),
    )
    .unwrap()
}

#[test]
fn data_parallel_over_two_replicas_matches_one_device() {
    // Two replicas on the one CPU device (Burn's CPU backends expose a single device): the
    // batch's two streams are split one per replica, each with its own memory, and the
    // target-weighted shard gradients are summed. With only the LM loss (token-mean, so it
    // decomposes exactly over shards) the run follows the single-device run up to float
    // summation order.
    let _g = serial();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let o = |dir: &Path, extra: usize| TrainOptions {
        max_steps: Some(5),
        extra_devices: vec![device(); extra],
        ..opts(dir)
    };
    let (_, one) = run_with(dp_config(false), &o(dirs[0].path(), 0));
    let (_, two) = run_with(dp_config(false), &o(dirs[1].path(), 1));
    assert_eq!(one.steps, 5);
    assert_eq!(two.steps, 5);
    assert_eq!(one.tokens, two.tokens, "both runs see every token");
    for ((s, a), (_, b)) in one.train_loss.iter().zip(&two.train_loss) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(1.0),
            "step {s}: one device {a}, two replicas {b}"
        );
    }
    // The tolerance discriminates: updates 5% larger (lr × 1.05) drift outside it.
    let (_, other) = run_with(
        dp_config(false),
        &TrainOptions {
            lr: 3e-3 * 1.05,
            ..o(dirs[2].path(), 0)
        },
    );
    let differs = one
        .train_loss
        .iter()
        .zip(&other.train_loss)
        .any(|((_, a), (_, b))| (a - b).abs() > 1e-4 * a.abs().max(1.0));
    assert!(differs, "the comparison above cannot tell runs apart");
}

#[test]
fn data_parallel_with_every_loss_term_resumes_exactly() {
    let _g = serial();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let o = |dir: &Path| TrainOptions {
        batch_size: 3,
        max_steps: Some(6),
        checkpoint_every: 3,
        extra_devices: vec![device()],
        ..opts(dir)
    };
    let (straight, sa) = run_with(dp_config(true), &o(a.path()));
    let _ = run_with(
        dp_config(true),
        &TrainOptions {
            stop_at_step: Some(3),
            ..o(b.path())
        },
    );
    let (resumed, sb) = run_with(
        dp_config(true),
        &TrainOptions {
            resume: true,
            ..o(b.path())
        },
    );
    assert_eq!(sb.resumed_from, Some(3));
    assert_eq!(sa.steps, 6);
    for ((pa, va), (pb, vb)) in tensors(&straight).iter().zip(&tensors(&resumed)) {
        assert_eq!(pa, pb);
        let same = va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{pa} differs after a data-parallel resume");
    }
    // The metrics have every auxiliary term and a filled buffer statistic.
    let m = read_metrics(a.path());
    assert_eq!(m.len(), 6);
    assert!(m.iter().all(|l| l["sparsity"].as_f64().unwrap() > 0.0));
}

#[test]
fn data_parallel_needs_a_stream_per_device() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let err = trainer::train_model(
        base(),
        &base_dir(),
        config(),
        corpus(8, Split::Train),
        None,
        &TrainOptions {
            batch_size: 2,
            extra_devices: vec![device(); 2],
            ..opts(tmp.path())
        },
        &device(),
    )
    .expect_err("3 devices for 2 streams must be refused");
    assert!(err.to_string().contains("batch_size ≥ 3"), "{err}");
}

#[test]
fn bad_options_are_refused_with_the_field_named() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = opts(tmp.path());
    assert!(ok.validate().is_ok());
    let cases: Vec<(TrainOptions, &str)> = vec![
        (
            TrainOptions {
                seq_len: 1,
                ..ok.clone()
            },
            "seq_len",
        ),
        (
            TrainOptions {
                drift_lr_mult: -1.0,
                ..ok.clone()
            },
            "drift_lr_mult",
        ),
        (
            TrainOptions {
                lora_lr_mult: f64::NAN,
                ..ok.clone()
            },
            "lora_lr_mult",
        ),
        (
            TrainOptions {
                warmup_ratio: 1.0,
                ..ok.clone()
            },
            "warmup_ratio",
        ),
        (
            TrainOptions {
                lr: 0.0,
                ..ok.clone()
            },
            // The field and its value: "lr" alone also matches lora_lr_mult and drift_lr_mult.
            "lr = 0 must be",
        ),
    ];
    for (o, needle) in cases {
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

#[test]
fn the_recurrence_usefulness_target_reaches_the_loss() {
    // The trainer scores each batch with its recurrence label (`loss_on`): without it, the
    // recurrence target has no target and its term would be exactly 0. The fixture's text
    // repeats one sentence, so every token recurs a few positions later; a horizon of one
    // token keeps only the targets that recur first thing in the next segment.
    let _g = serial();
    let usefulness = |target| {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = HippoFormerConfig {
            usefulness_target: target,
            usefulness_horizon: 1,
            ..dp_config(true)
        };
        run_with(
            cfg,
            &TrainOptions {
                max_steps: Some(2),
                ..opts(tmp.path())
            },
        );
        read_metrics(tmp.path())
            .iter()
            .map(|l| l["usefulness"].as_f64().unwrap())
            .collect::<Vec<f64>>()
    };
    let surprise = usefulness(hippo_model::UsefulnessTarget::Surprise);
    let recurrence = usefulness(hippo_model::UsefulnessTarget::Recurrence);
    for (s, r) in surprise.iter().zip(&recurrence) {
        assert!(r.is_finite() && *r > 0.0, "recurrence term {r}");
        assert!((s - r).abs() > 1e-4, "surprise {s} vs recurrence {r}");
    }
}
