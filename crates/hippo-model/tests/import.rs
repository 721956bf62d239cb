//! Import of the reference implementation's PyTorch checkpoint (fixture made by
//! `scripts/make_reference_state_dict.py`: reference key layout, random values) and the
//! parameter report, on the tiny Gemma 3 fixture.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::{Device, Tensor};
use hippo_gemma::Gemma;
use hippo_model::import::{Rule, import_reference};
use hippo_model::params::ParamKind;
use hippo_model::{FusionSpace, HippoError, HippoFormer, HippoFormerConfig, SalienceMode};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fixture(name: &str) -> PathBuf {
    root().join("reference-checkpoint").join(name)
}

fn base(device: &Device) -> Gemma {
    let dir = root().join("tiny-gemma3");
    hippo_gemma::load(dir.to_str().unwrap(), device)
        .unwrap()
        .model
}

/// The config matching the fixture's `config` (LoRA r = 4, α = 8 on q/v; 8 anchors).
/// The reference's semantics (configs/reference.toml): hidden-state values, hidden-space
/// fusion only, scaled-dot scoring — the modules its checkpoint holds weights for.
fn config() -> HippoFormerConfig {
    HippoFormerConfig {
        lora_r: 4,
        lora_alpha: 8.0,
        n_anchors: 8,
        buffer_size: 16,
        max_replay_rounds: 3,
        ..reference()
    }
}

fn reference() -> HippoFormerConfig {
    HippoFormerConfig::from_toml_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/reference.toml"),
    )
    .unwrap()
}

fn model(cfg: HippoFormerConfig) -> HippoFormer {
    let device = Device::flex();
    HippoFormer::new(base(&device), cfg, &device).unwrap()
}

fn reference_json() -> Value {
    let text = std::fs::read_to_string(fixture("hippoformer_ref.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Our tensors by path: (shape, values).
fn ours(model: &HippoFormer) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    model
        .collect(None, None, false)
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            let data = bridge::into_data(t).unwrap();
            let shape = data.shape().to_vec();
            (
                name,
                (shape, data.convert::<f32>().try_to_vec::<f32>().unwrap()),
            )
        })
        .collect()
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
        "{what}: {a} vs {b}"
    );
}

#[test]
fn every_hippoformer_tensor_is_imported_and_the_rest_is_named() {
    let mut m = model(config());
    let report = import_reference(&mut m, &fixture("hippoformer_ref.pt")).unwrap();
    let json = reference_json();

    assert!(report.is_complete(), "{report}");
    assert!(report.not_in_checkpoint.is_empty());
    let no_counterpart: Vec<&str> = report
        .no_counterpart
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    // The opening, the learned score scale, the probability mixture and the attention path
    // are this project's.
    assert_eq!(
        no_counterpart,
        [
            "attention_weight",
            "fusion.alpha",
            "memory.log_score_scale",
            "mix.gate.bias",
            "mix.gate.weight",
            "mix.opening"
        ]
    );
    assert_eq!(report.step, Some(json["step"].as_i64().unwrap()));

    // Every tensor of the new modules and every LoRA factor is a mapping target.
    let expected: BTreeSet<String> = m
        .parameter_list()
        .into_iter()
        .map(|(p, _, _)| p)
        .filter(|p| !p.starts_with("base.") || p.contains(".lora."))
        .filter(|p| !no_counterpart.contains(&p.as_str()))
        .collect();
    let mapped: BTreeSet<String> = report.mapped.iter().map(|x| x.ours.clone()).collect();
    assert_eq!(mapped, expected);
    // 4 layers × {q_proj, v_proj} × {A, B}.
    assert_eq!(mapped.iter().filter(|p| p.contains(".lora.")).count(), 16);

    // Every checkpoint key is either used or named with a reason; none is unknown.
    let keys: BTreeSet<String> = json["tensors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut used: BTreeSet<String> = report.mapped.iter().map(|x| x.reference.clone()).collect();
    used.insert("salience_gate.temporal_smooth.bias".into());
    let unused: BTreeSet<String> = report
        .unused_in_checkpoint
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert!(used.is_disjoint(&unused));
    assert_eq!(&used | &unused, keys);
    for s in &report.unused_in_checkpoint {
        assert!(!s.reason.contains("unknown"), "{}: {}", s.name, s.reason);
    }
    let not_base: BTreeSet<&str> = unused
        .iter()
        .filter(|k| !k.starts_with("base_model.") && *k != "lm_head.weight")
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = [
        "memory_consolidator.keys",
        "memory_consolidator.values",
        "memory_consolidator.priorities",
        "memory_consolidator.ages",
        "memory_consolidator.valid_mask",
        "memory_consolidator.write_ptr",
        "memory_consolidator.total_writes",
        "memory_consolidator.consolidation_proj.bias",
        "drift_calibrator.n_updates",
        "drift_calibrator.drift_history",
        "drift_calibrator.drift_ptr",
        "salience_gate.importance_lo",
        "salience_gate.importance_hi",
    ]
    .into_iter()
    .collect();
    assert_eq!(not_base, want);
    // No LoRA factor is left behind; every base weight is reported as the frozen base.
    assert!(unused.iter().all(|k| !k.contains("lora_")));
    assert!(
        report
            .unused_in_checkpoint
            .iter()
            .filter(|s| s.name.starts_with("base_model."))
            .all(|s| s.reason.starts_with("frozen base weight"))
    );
    for key in [
        "lora_r",
        "lora_alpha",
        "lora_target_modules",
        "importance_hi",
    ] {
        assert!(report.config_checked.iter().any(|c| c == key), "{key}");
    }
}

#[test]
fn imported_values_equal_the_fixture() {
    let mut m = model(config());
    let before = ours(&m);
    let report = import_reference(&mut m, &fixture("hippoformer_ref.pt")).unwrap();
    let after = ours(&m);
    let json = reference_json();
    let tensors = &json["tensors"];
    let checks = &json["checks"];

    for x in &report.mapped {
        let t = &tensors[&x.reference];
        let ref_sum = t["sum"].as_f64().unwrap();
        let first: Vec<f64> = t["first"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let ref_shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let (shape, values) = &after[&x.ours];
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let what = format!("{} → {}", x.reference, x.ours);
        assert_ne!(
            values, &before[&x.ours].1,
            "{what}: unchanged by the import"
        );
        match x.rule {
            Rule::Copy => {
                close(sum, ref_sum, &what);
                for (i, f) in first.iter().enumerate() {
                    close(f64::from(values[i]), *f, &what);
                }
            }
            Rule::Transpose => {
                // PyTorch row 0 is our column 0.
                close(sum, ref_sum, &what);
                let cols = shape[1];
                for (i, f) in first.iter().enumerate().take(ref_shape[1]) {
                    close(f64::from(values[i * cols]), *f, &what);
                }
            }
            Rule::InProjRows(p) => {
                let d = shape[1];
                if p == 0 {
                    for (i, f) in first.iter().enumerate() {
                        close(f64::from(values[i * d]), *f, &what);
                    }
                }
            }
            Rule::InProjThird(p) => {
                if p == 0 {
                    for (i, f) in first.iter().enumerate() {
                        close(f64::from(values[i]), *f, &what);
                    }
                }
            }
            Rule::Reversed => {
                let want: Vec<f64> = checks["smoothing_reversed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                let got: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
                assert_eq!(got, want, "{what}");
            }
            Rule::MinusConvBias => close(
                f64::from(values[0]),
                checks["threshold_minus_conv_bias"].as_f64().unwrap(),
                &what,
            ),
            Rule::BroadcastColumns => {
                // [D, D]: row i is the reference's weight i, repeated in every column.
                let cols = shape[1];
                close(sum, ref_sum * cols as f64, &what);
                for (i, f) in first.iter().enumerate() {
                    for j in 0..cols {
                        close(f64::from(values[i * cols + j]), *f, &what);
                    }
                }
            }
            Rule::BroadcastBias => {
                assert!(values.iter().all(|&v| v == values[0]), "{what}");
                close(f64::from(values[0]), first[0], &what);
            }
            Rule::Flag => assert!(values.iter().all(|&v| v == 1.0), "{what}"),
        }
    }
    // The three in_proj parts together hold all of in_proj.
    for (key, parts) in [
        (
            "output_fusion.cross_attn.in_proj_weight",
            [
                "fusion.q_proj.weight",
                "fusion.k_proj.weight",
                "fusion.v_proj.weight",
            ],
        ),
        (
            "output_fusion.cross_attn.in_proj_bias",
            [
                "fusion.q_proj.bias",
                "fusion.k_proj.bias",
                "fusion.v_proj.bias",
            ],
        ),
    ] {
        let total: f64 = parts
            .iter()
            .flat_map(|p| after[*p].1.iter().map(|&v| f64::from(v)))
            .sum();
        close(total, tensors[key]["sum"].as_f64().unwrap(), key);
    }
    // A base weight is untouched.
    let emb = "base.embed_tokens";
    assert_eq!(before[emb], after[emb]);
}

#[test]
fn lora_delta_is_b_a_scaled_by_alpha_over_r() {
    let mut m = model(config());
    import_reference(&mut m, &fixture("hippoformer_ref.pt")).unwrap();
    let checks = &reference_json()["checks"];
    let w = &m.base.layers[0].self_attn.q_proj.weight;
    let adapter = w.adapter().expect("q_proj carries a LoRA adapter");
    close(
        adapter.scale,
        checks["lora_scaling"].as_f64().unwrap(),
        "scale",
    );
    // Merged minus frozen base = the effective delta [in, out].
    let delta: Tensor<2> = w.val() - w.base();
    let [rows, cols] = delta.dims();
    let values = delta.to_data().try_to_vec::<f32>().unwrap();
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    close(
        sum,
        checks["layer0_q_delta_in_out_sum"].as_f64().unwrap(),
        "delta sum",
    );
    let row: Vec<f64> = checks["layer0_q_delta_in_out_first_row"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (j, want) in row.iter().enumerate() {
        close(f64::from(values[j]), *want, "delta[0][j]");
    }
    assert_eq!([rows, cols], [64, 128]);
    // The same through the merge used for inference.
    let merged = hippo_gemma::lora::merged(&m.base);
    let merged_w = merged.layers[0].self_attn.q_proj.weight.val();
    let diff = (merged_w - w.base()).to_data().try_to_vec::<f32>().unwrap();
    let merged_sum: f64 = diff.iter().map(|&v| f64::from(v)).sum();
    close(merged_sum, sum, "merged delta");
}

#[test]
fn a_shape_mismatch_names_the_tensor_and_both_shapes() {
    let mut m = model(HippoFormerConfig {
        n_anchors: 4,
        ..config()
    });
    let before = ours(&m);
    let err = import_reference(&mut m, &fixture("hippoformer_ref.pt")).unwrap_err();
    match &err {
        HippoError::ImportShape(e) => {
            let hippo_model::error::ShapeMismatch {
                key,
                found,
                ours: path,
                expected,
                ..
            } = e.as_ref();
            assert_eq!(key, "drift_calibrator.anchors");
            assert_eq!(found, &[8, 64]);
            assert_eq!(path, "drift.anchors");
            assert_eq!(expected, &[4, 64]);
        }
        other => panic!("expected a shape error, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("drift_calibrator.anchors")
            && text.contains("[8, 64]")
            && text.contains("[4, 64]"),
        "{text}"
    );
    // Nothing was applied.
    assert_eq!(ours(&m), before);
}

#[test]
fn a_lora_scale_mismatch_is_refused() {
    let mut m = model(HippoFormerConfig {
        lora_alpha: 16.0,
        ..config()
    });
    let err = import_reference(&mut m, &fixture("hippoformer_ref.pt")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("lora_alpha") && text.contains('8') && text.contains("16"),
        "{text}"
    );
}

#[test]
fn unknown_and_missing_keys_are_reported() {
    let mut m = model(config());
    let report = import_reference(&mut m, &fixture("partial_state_dict.pt")).unwrap();
    assert_eq!(report.step, None);
    assert!(report.config_checked.iter().all(|c| c == "importance_hi"));
    let unknown: Vec<&str> = report
        .unused_in_checkpoint
        .iter()
        .filter(|s| s.reason.starts_with("unknown key"))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        unknown,
        ["salience_gate.extra_scale", "unknown_module.weight"]
    );
    // The gate came in; every other module's tensors are named as missing.
    assert!(report.mapped.iter().all(|x| x.ours.starts_with("gate.")));
    assert_eq!(report.mapped.len(), 17);
    let missing: Vec<&str> = report
        .not_in_checkpoint
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert!(missing.contains(&"fusion.gate_out.weight"));
    assert!(missing.contains(&"drift.a"));
    assert!(missing.contains(&"base.layers.3.self_attn.v_proj.weight.lora.b"));
    assert!(missing.iter().all(|p| !p.starts_with("gate.")));
    assert!(!report.is_complete());
}

#[test]
fn a_file_that_is_not_a_checkpoint_is_an_error() {
    let mut m = model(config());
    let err = import_reference(&mut m, &root().join("tiny-gemma3/config.json")).unwrap_err();
    assert!(matches!(err, HippoError::Checkpoint { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Parameter report
// ---------------------------------------------------------------------------------------------

/// Hand-computed counts for the tiny Gemma 3 (from its config) and a config.
struct Expected {
    base: usize,
    lora: usize,
    gate: usize,
    drift: usize,
    drift_state: usize,
    memory: usize,
    fusion: usize,
    mix: usize,
}

fn expected(cfg: &HippoFormerConfig, g: &hippo_gemma::GemmaConfig) -> Expected {
    let d = g.hidden_size;
    let q = g.num_heads * g.head_dim;
    let kv = g.num_kv_heads * g.head_dim;
    let i = g.intermediate_size;
    // Gemma 3: no biases; q/k norms of head_dim; four norms per layer (sandwich); final norm.
    let layer = d * q + 2 * d * kv + q * d + 2 * g.head_dim + 3 * d * i + 4 * d;
    let base = g.vocab_size * d + g.num_layers * layer + d;
    let out_of = |t: &str| if t == "q_proj" { q } else { kv };
    let lora = if cfg.use_lora {
        g.num_layers
            * cfg
                .lora_targets
                .iter()
                .map(|t| cfg.lora_r * (d + out_of(t)))
                .sum::<usize>()
    } else {
        0
    };
    let lin = |i: usize, o: usize| i * o + o;
    let gate = lin(d, d / 2)
        + lin(d / 2, d / 4)
        + lin(d / 4, 1)
        + 3 * lin(d, d)
        + lin(d, 1)
        + 1
        + cfg.salience_min_duration
        + 1;
    Expected {
        base,
        lora,
        gate,
        drift: d * d + d,
        drift_state: cfg.n_anchors * d + cfg.n_anchors + 2 * d,
        // Projections, consolidation, ln θ and the attention path's weight per layer.
        memory: 3 * lin(d, d) + d * d + 1 + g.num_layers,
        fusion: 4 * lin(d, d) + lin(2 * d, d) + lin(d, d) + 2 * d + 1,
        mix: lin(d + 2, 1) + 1,
    }
}

fn row(m: &HippoFormer, name: &str) -> [usize; 4] {
    let r = m.parameter_report();
    let r = r.row(name).unwrap();
    [r.trainable, r.frozen, r.inactive, r.state]
}

#[test]
fn parameter_report_matches_hand_counts_and_follows_the_config() {
    let device = Device::flex();
    let gemma = base(&device);
    let g = gemma.config().clone();
    let build = |cfg: HippoFormerConfig| HippoFormer::new(gemma.clone(), cfg, &device).unwrap();

    // Both fusion paths: every module trains.
    let cfg = HippoFormerConfig {
        fusion_space: FusionSpace::Both,
        ..config()
    };
    let e = expected(&cfg, &g);
    let m = build(cfg.clone());
    assert_eq!(row(&m, "base"), [0, e.base, 0, 0]);
    assert_eq!(row(&m, "lora"), [e.lora, 0, 0, 0]);
    assert_eq!(e.lora, 4 * (4 * (64 + 128) + 4 * (64 + 64)));
    assert_eq!(row(&m, "gate"), [e.gate, 0, 0, 0]);
    assert_eq!(row(&m, "drift"), [e.drift, 0, 0, e.drift_state]);
    assert_eq!(row(&m, "memory"), [e.memory, 0, 0, 0]);
    assert_eq!(row(&m, "fusion"), [e.fusion, 0, 0, 0]);
    assert_eq!(row(&m, "mix"), [e.mix, 0, 0, 0]);
    let report = m.parameter_report();
    let total = report.total();
    assert_eq!(
        total.trainable,
        e.lora + e.gate + e.drift + e.memory + e.fusion + e.mix
    );
    assert_eq!(
        total.total(),
        e.base + e.lora + e.gate + e.drift + e.drift_state + e.memory + e.fusion + e.mix
    );
    // One path only: the other's modules are inactive (the value and consolidation
    // projections serve only the hidden path).
    let d = g.hidden_size;
    let value_and_consolidation = d * d + d + d * d;
    let m = build(HippoFormerConfig {
        fusion_space: FusionSpace::Probability,
        memory_value: hippo_model::MemoryValue::NextToken,
        ..cfg.clone()
    });
    assert_eq!(row(&m, "fusion"), [0, 0, e.fusion, 0]);
    assert_eq!(row(&m, "mix"), [e.mix, 0, 0, 0]);
    assert_eq!(
        row(&m, "memory"),
        [
            e.memory - value_and_consolidation,
            0,
            value_and_consolidation,
            0
        ]
    );
    let m = build(HippoFormerConfig {
        fusion_space: FusionSpace::Hidden,
        ..cfg.clone()
    });
    assert_eq!(row(&m, "fusion"), [e.fusion, 0, 0, 0]);
    assert_eq!(row(&m, "mix"), [0, 0, e.mix, 0]);
    assert_eq!(row(&m, "memory"), [e.memory, 0, 0, 0]);
    // Every tensor belongs to a row, and the Display table names every row.
    assert!(m.parameter_list().iter().all(|(_, _, c)| c.is_some()));
    let text = report.to_string();
    for name in [
        "base", "lora", "gate", "drift", "memory", "fusion", "mix", "total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} in\n{text}"
        );
    }

    // LoRA off, base frozen: no factors, the base still frozen.
    let m = build(HippoFormerConfig {
        use_lora: false,
        ..cfg.clone()
    });
    assert_eq!(row(&m, "lora"), [0, 0, 0, 0]);
    assert_eq!(row(&m, "base"), [0, e.base, 0, 0]);
    // LoRA off, base not frozen: the whole base trains.
    let m = build(HippoFormerConfig {
        use_lora: false,
        freeze_base: false,
        ..cfg.clone()
    });
    assert_eq!(row(&m, "base"), [e.base, 0, 0, 0]);
    // A larger rank on more targets.
    let wide = HippoFormerConfig {
        lora_r: 8,
        lora_targets: vec!["q_proj".into(), "k_proj".into(), "v_proj".into()],
        ..cfg.clone()
    };
    let m = build(wide.clone());
    assert_eq!(row(&m, "lora"), [expected(&wide, &g).lora, 0, 0, 0]);
    assert_eq!(
        expected(&wide, &g).lora,
        4 * 8 * ((64 + 128) + 2 * (64 + 64))
    );
    // Ablations move their module to `inactive`.
    let m = build(HippoFormerConfig {
        drift: false,
        ..cfg.clone()
    });
    assert_eq!(row(&m, "drift"), [0, 0, e.drift, e.drift_state]);
    let m = build(HippoFormerConfig {
        salience: SalienceMode::Off,
        ..cfg.clone()
    });
    assert_eq!(row(&m, "gate"), [0, 0, e.gate, 0]);
    let m = build(HippoFormerConfig {
        fusion: false,
        ..cfg.clone()
    });
    assert_eq!(row(&m, "fusion"), [1, 0, e.fusion - 1, 0]);
    // Without the gate, the mixture keeps only its opening.
    assert_eq!(row(&m, "mix"), [1, 0, e.mix - 1, 0]);
    let m = build(HippoFormerConfig {
        memory: false,
        ..cfg.clone()
    });
    assert_eq!(row(&m, "memory"), [0, 0, e.memory, 0]);
    assert_eq!(row(&m, "fusion"), [0, 0, e.fusion, 0]);
    assert_eq!(row(&m, "mix"), [0, 0, e.mix, 0]);
    // The smoothing width changes the gate.
    let k3 = HippoFormerConfig {
        salience_min_duration: 3,
        ..cfg
    };
    let m = build(k3.clone());
    assert_eq!(row(&m, "gate")[0], expected(&k3, &g).gate);
    assert_eq!(expected(&k3, &g).gate, e.gate + 1);
}

/// Records whether each tensor requires a gradient (on an autodiff device, where that is real).
struct Grads {
    path: Vec<String>,
    found: Vec<(String, bool)>,
}

impl ModuleVisitor for Grads {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.found
            .push((self.path.join("."), param.base().is_require_grad()));
    }
}

#[test]
fn report_classes_agree_with_burn_require_grad() {
    let device = Device::flex().autodiff();
    for cfg in [
        config(),
        HippoFormerConfig {
            use_lora: false,
            ..config()
        },
        HippoFormerConfig {
            use_lora: false,
            freeze_base: false,
            ..config()
        },
    ] {
        let m = HippoFormer::new(base(&device), cfg, &device).unwrap();
        let mut v = Grads {
            path: Vec::new(),
            found: Vec::new(),
        };
        m.visit(&mut v);
        assert!(!v.found.is_empty());
        for (path, requires) in v.found {
            let (_, kind) = m.classify_param(&path).unwrap();
            // Inactive parameters are trainable in Burn's sense; they just get no gradient.
            let trainable = matches!(kind, ParamKind::Trainable | ParamKind::Inactive);
            assert_eq!(requires, trainable, "{path}: {kind:?}");
        }
    }
}

#[test]
fn an_imported_model_round_trips_through_a_native_checkpoint() {
    let device = Device::flex();
    let base_dir = root().join("tiny-gemma3");
    let mut m = model(config());
    import_reference(&mut m, &fixture("hippoformer_ref.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base_ref = hippo_model::checkpoint::BaseRef::of(&base_dir).unwrap();
    hippo_model::checkpoint::save(&m, dir.path(), 1234, &base_ref).unwrap();
    let (loaded, meta) =
        hippo_model::checkpoint::load(base(&device), &base_dir, dir.path(), &device).unwrap();
    assert_eq!(meta.step, 1234);
    let (a, b) = (ours(&m), ours(&loaded));
    for (path, _, _) in m.parameter_list() {
        assert_eq!(a[&path], b[&path], "{path}");
    }
}
