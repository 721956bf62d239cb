//! What the training tests share: the tiny Gemma 3 fixture, a byte tokenizer for it, a small
//! repetitive corpus, the tiny HippoFormer config and the training options.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use burn::module::Module;
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};
use hippo_data::{Document, Split, Tokenize, TokenizedCorpus};
use hippo_gemma::Gemma;
use hippo_model::{HippoFormer, HippoFormerConfig};
use hippo_train::Schedule;
use hippo_train::trainer::TrainOptions;

/// The device RNG (dropout, LoRA init) is process-global: run trainings one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn device() -> Device {
    Device::flex()
}

pub fn base_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3")
}

pub fn base() -> Gemma {
    hippo_gemma::load(base_dir().to_str().unwrap(), &device())
        .unwrap()
        .model
}

/// ASCII bytes as ids (< 128), BOS = 2: fits the fixture's vocabulary of 256.
pub struct Tiny;

impl Tokenize for Tiny {
    fn encode(&self, text: &str) -> hippo_data::Result<Vec<u32>> {
        Ok(std::iter::once(2)
            .chain(text.bytes().map(|b| u32::from(b % 128)))
            .collect())
    }

    fn fingerprint(&self) -> hippo_data::Result<String> {
        Ok("tiny".into())
    }
}

/// `n` documents of 2–4 repetitions of one sentence.
pub fn corpus(n: usize, split: Split) -> Arc<TokenizedCorpus> {
    let docs: Vec<Document> = (0..n)
        .map(|i| Document {
            id: format!("d{i}"),
            title: String::new(),
            text: "the cat sat on the mat. ".repeat(2 + i % 3),
            source: "test".into(),
            url: None,
        })
        .collect();
    let mut c = TokenizedCorpus::build(&docs, &Tiny, "test", split).unwrap();
    c.key = format!("test-{split:?}");
    Arc::new(c)
}

/// A small HippoFormer over the fixture.
pub fn config() -> HippoFormerConfig {
    HippoFormerConfig {
        buffer_size: 16,
        max_replay_rounds: 3,
        lora_r: 4,
        n_anchors: 8,
        ..HippoFormerConfig::default()
    }
}

/// 12 steps of 2 × 16 tokens, cosine schedule, no checkpoints until the end.
pub fn opts(dir: &Path) -> TrainOptions {
    TrainOptions {
        seq_len: 16,
        batch_size: 2,
        grad_accum: 1,
        max_steps: Some(12),
        epochs: None,
        lr: 3e-3,
        lora_lr_mult: 0.1,
        drift_lr_mult: 0.01,
        warmup_ratio: 0.1,
        schedule: Schedule::Cosine,
        weight_decay: 0.01,
        clip_norm: Some(1.0),
        checkpoint_every: 0,
        keep_last: 0,
        valid_every: 0,
        valid_batches: 4,
        seed: 7,
        output_dir: dir.to_path_buf(),
        resume: false,
        init_from: None,
        log_every: 100,
        stop_at_step: None,
        extra_devices: Vec::new(),
    }
}

/// The logits (always f32) of a fixed two-row segment read after the model has written that
/// same segment once: the second reads what the first wrote.
pub fn logits(m: &HippoFormer) -> Vec<f32> {
    let m = m.valid();
    let dev = device();
    let ids: Vec<i64> = (0..24).map(|i| (i * 7 % 100) as i64 + 3).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 12]), &dev);
    let valid = Tensor::<2, Bool>::full([2, 12], true, &dev);
    let state = m.empty_state(2, &dev);
    let (_, state) = m.step(ids.clone(), valid.clone(), state).unwrap();
    let out = m.forward(ids, valid, &state).unwrap();
    assert_eq!(out.logits().dtype(), DType::F32);
    out.logits()
        .to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}
