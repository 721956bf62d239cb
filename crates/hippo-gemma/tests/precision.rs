//! bf16 mixed precision on the tiny transformers fixtures (Gemma 1, 2, 3): the bf16 path is live
//! (logits differ from f32) and close to f32, outputs and parameters stay f32, KV-cache decoding
//! agrees with the full bf16 forward, and gradients reach the f32 LoRA factors close to f32's.
//!
//! Tolerances: bf16 keeps 8 significant bits, so each cast rounds with a relative error of at
//! most 2⁻⁹ ≈ 0.2 %; a matmul's inputs and weights are both rounded and the rounded results feed
//! every later layer. A relative error of a few percent of the logits' scale after a few layers
//! is what bf16 gives; a mixed-dtype bug (flex reinterprets bytes in release) gives errors of the
//! order of the logits themselves or non-finite values, far above these bounds.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Int, Tensor, TensorData};
use common::*;
use hippo_gemma::lora::{self, LoraSettings};
use hippo_gemma::{Gemma, Precision, load};

const FIXTURES: [&str; 3] = ["tiny-gemma1", "tiny-gemma2", "tiny-gemma3"];

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Mean over positions of −log p(next token), from flattened `[T * V]` logits.
fn mean_nll(logits: &[f32], ids: &[u32], v: usize) -> f32 {
    let t = ids.len();
    let l = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [t, v]), &device());
    let lp = to_vec(log_softmax(l, 1));
    let n = t - 1;
    (0..n)
        .map(|i| -lp[i * v + ids[i + 1] as usize])
        .sum::<f32>()
        / n as f32
}

/// A parameter's path, rank, whether it trains, and stored dtype (a visitor sees LoRA-adapted
/// weights without their adapter: their stored base).
type ParamInfo = (String, usize, bool, DType);

struct Dtypes {
    path: Vec<String>,
    out: Vec<ParamInfo>,
}

impl ModuleVisitor for Dtypes {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let raw = p.base();
        self.out
            .push((self.path.join("."), D, raw.is_require_grad(), raw.dtype()));
    }
}

fn params<M: Module>(m: &M) -> Vec<ParamInfo> {
    let mut v = Dtypes {
        path: Vec::new(),
        out: Vec::new(),
    };
    m.visit(&mut v);
    v.out
}

/// The storage rule of `with_precision(Bf16)`: trainable parameters (LoRA factors included) and
/// norm gains in f32, frozen matmul weights in bf16; a LoRA-adapted weight composes in f32.
fn check_storage(m: &Gemma) -> (usize, usize) {
    let (mut bf16, mut f32) = (0, 0);
    for (path, rank, trains, stored) in params(m) {
        let want = if rank == 2 && !trains && !path.contains("lora") {
            DType::BF16
        } else {
            DType::F32
        };
        assert_eq!(stored, want, "{path} (trains: {trains})");
        if want == DType::BF16 {
            bf16 += 1;
        } else {
            f32 += 1;
        }
    }
    (bf16, f32)
}

#[test]
fn bf16_logits_are_close_to_f32_not_identical_and_f32_typed() {
    for dir in FIXTURES {
        let f32_model = tiny(dir);
        let bf16_model = f32_model.clone().with_precision(Precision::Bf16).unwrap();
        assert_eq!(f32_model.precision(), Precision::F32);
        assert_eq!(bf16_model.precision(), Precision::Bf16);
        let ids = reference_ids(dir);
        let v = f32_model.config().vocab_size;
        let x = f32_model
            .ids_tensor(std::slice::from_ref(&ids), &device())
            .unwrap();
        let out = bf16_model.forward(x.clone(), None);
        assert_eq!(out.logits.dtype(), DType::F32, "{dir}: logits dtype");
        assert_eq!(out.hidden.dtype(), DType::F32, "{dir}: hidden dtype");
        let want = to_vec(f32_model.forward(x, None).logits);
        let got = to_vec(out.logits);
        assert!(got.iter().all(|x| x.is_finite()), "{dir}: non-finite logit");
        let diff = max_abs_diff(&got, &want);
        let scale = max_abs(&want);
        assert!(diff > 0.0, "{dir}: bf16 logits are bit-identical to f32");
        assert!(
            diff <= 0.05 * scale,
            "{dir}: max |Δlogit| = {diff} over a logit scale of {scale}"
        );
        let (nf, nb) = (mean_nll(&want, &ids, v), mean_nll(&got, &ids, v));
        assert!(
            (nf - nb).abs() <= 0.01 * nf,
            "{dir}: mean NLL f32 {nf} vs bf16 {nb}"
        );
        eprintln!(
            "{dir}: max |Δlogit| {diff:.3e} (scale {scale:.3}), NLL f32 {nf:.5} bf16 {nb:.5}"
        );
        // Nothing trains here: every matmul weight is stored in bf16, the norm gains in f32;
        // `F32` stores them in f32 again.
        let layers = f32_model.config().num_layers;
        assert_eq!(check_storage(&bf16_model).0, 1 + 7 * layers, "{dir}");
        let back = bf16_model.with_precision(Precision::F32).unwrap();
        assert!(params(&back).iter().all(|p| p.3 == DType::F32));
    }
}

#[test]
fn bf16_kv_cache_decoding_matches_the_full_bf16_forward() {
    for dir in FIXTURES {
        let model = tiny(dir).with_precision(Precision::Bf16).unwrap();
        let ids = reference_ids(dir);
        let full = logits_of(&model, &ids);
        let mut cache = model.new_cache();
        let mut got = Vec::new();
        let mut pos = 0;
        while pos < ids.len() {
            let step = if pos == 0 { 5 } else { 1 };
            let chunk = ids[pos..(pos + step).min(ids.len())].to_vec();
            let x = model
                .ids_tensor(std::slice::from_ref(&chunk), &device())
                .unwrap();
            let out = model.forward(x, Some(&mut cache)).logits;
            assert_eq!(out.dtype(), DType::F32);
            got.extend(to_vec(out));
            pos += chunk.len();
        }
        // The same bf16 roundings, in another order of f32 accumulation inside the matmuls:
        // a rounding flip of one bf16 ulp somewhere is possible, a different computation is not.
        let diff = max_abs_diff(&got, &full);
        let scale = max_abs(&full);
        assert!(
            diff <= 0.02 * scale,
            "{dir}: cached vs full bf16 max |Δlogit| = {diff} (scale {scale})"
        );
    }
}

/// LM loss of one row on `model` (autodiff device), and the gradients of every LoRA factor,
/// flattened in visiting order, with their dtypes.
fn lora_grads(model: &Gemma, ids: &[u32]) -> (f32, Vec<f32>, Vec<DType>) {
    let dev = device().autodiff();
    let t = ids.len();
    let v = model.config().vocab_size;
    let x = model.ids_tensor(&[ids[..t - 1].to_vec()], &dev).unwrap();
    let targets: Vec<i64> = ids[1..].iter().map(|&i| i as i64).collect();
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [t - 1, 1]), &dev);
    let logits = model.forward(x, None).logits.reshape([t - 1, v]);
    let loss = log_softmax(logits, 1).gather(1, targets).mean().neg();
    let value = loss.clone().into_scalar::<f32>();
    let grads = GradientsParams::from_grads(loss.backward(), model);
    struct Grads<'a> {
        grads: &'a GradientsParams,
        values: Vec<f32>,
        dtypes: Vec<DType>,
        count: usize,
    }
    impl ModuleVisitor for Grads<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(p.id) {
                self.dtypes.push(g.dtype());
                self.values.extend(to_vec(g));
                self.count += 1;
            }
        }
    }
    let mut g = Grads {
        grads: &grads,
        values: Vec::new(),
        dtypes: Vec::new(),
        count: 0,
    };
    model.visit(&mut g);
    // 2 layers or more × (q_proj, v_proj) × (a, b): only the factors have gradients.
    assert!(
        g.count >= 8 && g.count.is_multiple_of(4),
        "{} gradients",
        g.count
    );
    (value, g.values, g.dtypes)
}

#[test]
fn bf16_gradients_reach_the_f32_lora_factors_and_agree_with_f32() {
    let dev = device().autodiff();
    let ids = reference_ids("tiny-gemma3");
    dev.seed(3);
    let on_ad = load(fixtures().join("tiny-gemma3").to_str().unwrap(), &dev)
        .unwrap()
        .model;
    let adapted = lora::apply(on_ad, &LoraSettings::default()).unwrap();
    // B = 0 at init gives A no gradient; give B values so both factors have one.
    struct Perturb;
    impl burn::module::ModuleMapper for Perturb {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if p.is_require_grad() {
                p.map(|t| {
                    let noise = t.random_like(burn::tensor::Distribution::Normal(0.0, 0.05));
                    (t + noise).detach().require_grad()
                })
            } else {
                p
            }
        }
    }
    let adapted = adapted.map(&mut Perturb);
    let bf16 = adapted.clone().with_precision(Precision::Bf16).unwrap();
    // LoRA factors f32 (and training), frozen base weights bf16, adapted weights composed in f32.
    let (frozen, kept) = check_storage(&bf16);
    let layers = bf16.config().num_layers;
    assert_eq!(frozen, 1 + 7 * layers);
    let factors = params(&bf16).iter().filter(|p| p.2).count();
    assert_eq!(
        factors,
        4 * layers,
        "q_proj and v_proj adapters: a and b per layer"
    );
    assert!(kept > factors);
    let attn = &bf16.layers[0].self_attn;
    assert_eq!(attn.q_proj.weight.base().dtype(), DType::BF16);
    assert_eq!(
        attn.q_proj.weight.val().dtype(),
        DType::F32,
        "W + ΔW composes in f32"
    );
    assert_eq!(attn.k_proj.weight.val().dtype(), DType::BF16);
    let (lf, gf, _) = lora_grads(&adapted, &ids);
    let (lb, gb, dtypes) = lora_grads(&bf16, &ids);
    assert!(dtypes.iter().all(|&d| d == DType::F32), "{dtypes:?}");
    assert!(
        lb.is_finite() && (lf - lb).abs() <= 0.01 * lf,
        "loss {lf} vs {lb}"
    );
    assert!(gb.iter().all(|x| x.is_finite()));
    assert!(
        gb.iter().any(|&x| x != 0.0),
        "no gradient reached the factors"
    );
    assert_ne!(gf, gb, "the bf16 backward equals f32's bit for bit");
    let dot: f64 = gf.iter().zip(&gb).map(|(a, b)| (a * b) as f64).sum();
    let norm = |g: &[f32]| g.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt();
    let cosine = dot / (norm(&gf) * norm(&gb));
    let rel = (norm(&gb) / norm(&gf) - 1.0).abs();
    eprintln!("LoRA gradient: cosine(f32, bf16) = {cosine:.6}, |‖g_bf16‖/‖g_f32‖ − 1| = {rel:.2e}");
    assert!(cosine > 0.99, "cosine {cosine}");
    assert!(rel < 0.05, "gradient norm ratio off by {rel}");
}
