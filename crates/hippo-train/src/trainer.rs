//! The training loop: AdamW over the HippoFormer's trainable part, per-stream memory carried
//! across segments, periodic validation, atomic resumable checkpoints.
//!
//! # Why not burn-train's `Learner`
//!
//! `Learner`/`SupervisedTraining` calls a stateless `TrainStep::step(&self, batch)` per batch.
//! HippoFormer's batches are *consecutive segments of B document streams*: each row's memory
//! buffer ([`MemoryState`]) must be carried from one batch to the next, reset per row at
//! document boundaries, and saved with the checkpoint so a resumed run is exact. `Learner` has
//! no place for state that lives between steps outside the module (and a checkpoint of it), so
//! the loop is written by hand with Burn's optimizer API.
//!
//! # One optimizer step
//!
//! 1. The device RNG (dropout) is reseeded from `(seed, step)`, so every step's randomness is a
//!    function of the step alone and needs no saving.
//! 2. `grad_accum` micro-batches: reset the rows flagged `reset` (new document or padding),
//!    `forward` (reads memory), loss, `backward`, accumulate the gradients
//!    ([`GradientsAccumulator`]), then `commit` (writes the segment into memory). The state is
//!    detached after every commit: no backpropagation through time across segments.
//! 3. Gradients are averaged over the micro-batches and clipped to one **global** norm over all
//!    trainable parameters ([`clip`]; Burn's built-in clipping is per parameter).
//! 4. One [`ModuleOptimizer`] (AdamW, decoupled weight decay) steps with per-group learning
//!    rates: Burn 0.22's [`ModuleLrScheduler::with_group`] gives the LoRA factors
//!    (`….lora.a|b`) `lora_lr_mult ×` the rate of everything else — one optimizer, one record,
//!    no second optimizer over a disjoint group to keep in sync. Frozen base weights have no
//!    gradient ([`GradientsParams`] only holds parameters that require one), so they never
//!    enter the optimizer or its state.
//! 5. The rate follows [`schedule::lr_at`]: linear warmup, then linear or cosine decay.
//!
//! # Checkpoints and resume
//!
//! Every `checkpoint_every` steps and at the end, `<output>/checkpoints/step-NNNNNNNN/` is
//! written atomically ([`state::write_atomic`]) and only the newest `keep_last` are kept. It
//! holds the model's trainable part ([`hippo_model::checkpoint`]: gate, drift incl. anchors and
//! running statistics, memory projections, fusion, LoRA factors, config, base fingerprint), the
//! optimizer record (Burn's `OptimizerRecord`, keyed by `ParamId`, which the model record
//! preserves), the per-stream **memory state** (so a resumed run continues mid-document exactly
//! as an uninterrupted one would), the batcher's position ([`BatcherState`]), the step, the seed,
//! token count and time. With `resume`, training continues from the newest checkpoint and ends
//! with weights bit-identical to an uninterrupted run with the same options (on the same
//! device and thread count).
//!
//! # Failure
//!
//! A non-finite loss or gradient norm stops training with [`TrainError::NonFinite`] before the
//! update is applied; the checkpoints already written stay as they are. A failed checkpoint
//! write is an error and leaves the previous checkpoints intact.
//!
//! # Output
//!
//! `<output>/config.toml` (the effective config), `<output>/metrics.jsonl` (one [`StepMetrics`]
//! per step; on resume, lines past the resumed step are dropped) and `tracing` lines; a caller
//! of [`Trainer::run`] reports progress (xtask draws a bar).

pub mod clip;
pub mod metrics;
mod parallel;
pub mod schedule;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{Module, ParamGroup};
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Bool, Device, Tensor};
use hippo_data::seed::splitmix64;
use hippo_gemma::Gemma;
use hippo_memory::MemoryState;
use hippo_model::checkpoint::{self, BaseRef};
use hippo_model::model::LossTerms;
use hippo_model::{HippoError, HippoFormer, HippoFormerConfig, SegmentTensors, StreamRunner};
use serde::{Deserialize, Serialize};

use hippo_data::{
    BatcherConfig, DataError, SegmentBatch, SegmentLayout, StreamBatcher, TokenizedCorpus,
};
pub use metrics::{MetricsWriter, StepMetrics};
pub use schedule::Schedule;
use state::TrainerState;

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Invalid options.
    #[error("invalid training options: {0}")]
    Options(String),
    /// The data layer failed (corpus, batcher, bad batcher state on resume).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model failed (config, forward, model checkpoint).
    #[error(transparent)]
    Model(#[from] HippoError),
    /// A file could not be read or written.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A training checkpoint could not be written or read.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The loss or the gradient norm became NaN or infinite.
    #[error(
        "{what} is {value} at step {step}: training stopped before applying the update; the \
         last checkpoint ({}) is intact — lower the learning rate or check the data",
        last_checkpoint.as_ref().map_or_else(|| "none written".to_string(), |p| p.display().to_string())
    )]
    NonFinite {
        /// The optimizer step (0-based) being computed.
        step: usize,
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The value.
        value: f64,
        /// The newest checkpoint on disk.
        last_checkpoint: Option<PathBuf>,
    },
}

/// Result of training functions.
pub type Result<T> = std::result::Result<T, TrainError>;

/// Options of a training run (the model's own knobs are in [`HippoFormerConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Tokens per segment.
    pub seq_len: usize,
    /// Streams (rows) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Stop after this many optimizer steps (with `epochs = None`: stream endlessly until then).
    pub max_steps: Option<usize>,
    /// Passes over the training corpus (default 1 when `max_steps` is `None`).
    pub epochs: Option<usize>,
    /// Peak learning rate.
    pub lr: f64,
    /// Multiplier of the LoRA factors' learning rate.
    pub lora_lr_mult: f64,
    /// Multiplier of the drift calibrator's learning rate (`A`, `b`). `A` is a `D × D` matrix
    /// at the identity whose gradient `Σ hᵀg` is nearly rank one; Adam moves every entry by
    /// about the learning rate per step, so one step shifts each corrected hidden state by
    /// about `lr · ‖h‖₁` — at `lr = 1e-3` and D = 640, most of a hidden state's mean magnitude.
    /// Default 0.01 (measured: see `drift_lr_mult` in README.md).
    #[serde(default = "default_drift_lr_mult")]
    pub drift_lr_mult: f64,
    /// Fraction of the steps spent warming up linearly.
    pub warmup_ratio: f64,
    /// Decay after the warmup.
    pub schedule: Schedule,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm bound (`None`: no clipping).
    pub clip_norm: Option<f64>,
    /// Write a checkpoint every N steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Keep the newest K checkpoints (0: all).
    pub keep_last: usize,
    /// Validate every N steps (0: only at the end); needs a validation corpus.
    pub valid_every: usize,
    /// Validation batches per validation.
    pub valid_batches: usize,
    /// Seed of shuffling and dropout (module initialisation uses the config's `seed`).
    pub seed: u64,
    /// Where checkpoints, `config.toml` and `metrics.jsonl` go.
    pub output_dir: PathBuf,
    /// Continue from the newest checkpoint in `output_dir` (a fresh start if there is none).
    pub resume: bool,
    /// Start a fresh run (step 0, new optimizer state, empty memory) from this checkpoint's
    /// trainable weights instead of the initialisation, e.g. one written by `cargo xtask
    /// calibrate`. The run's config may differ from the checkpoint's where the trainable tensors
    /// stay the same (names and shapes; [`checkpoint::load_weights_into`]); the fields that differ
    /// are logged. A `resume` that finds a checkpoint of its own takes precedence.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Log a plain line every N steps when stderr is not a terminal.
    pub log_every: usize,
    /// Stop this invocation once this many steps are done (writing a checkpoint there) without
    /// changing the schedule, as if interrupted; a later `resume` run continues.
    pub stop_at_step: Option<usize>,
    /// Extra devices for data-parallel training. Each micro-batch's streams (rows) are split
    /// into contiguous shards over `[device] + extra_devices`; each shard runs forward and
    /// backward on its own model replica with its own streams' memory, in its own thread, and
    /// the shard gradients are summed on the main device weighted by each shard's share of the
    /// batch's targets (the semantics of PyTorch DDP: auxiliary losses are computed per shard).
    /// The optimizer, validation and checkpoints stay on the main device. Empty: one device.
    #[serde(skip)]
    pub extra_devices: Vec<Device>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seq_len: 512,
            batch_size: 4,
            grad_accum: 1,
            max_steps: None,
            epochs: None,
            lr: 1e-4,
            lora_lr_mult: 0.1,
            drift_lr_mult: default_drift_lr_mult(),
            warmup_ratio: 0.1,
            schedule: Schedule::Linear,
            weight_decay: 0.01,
            clip_norm: Some(1.0),
            checkpoint_every: 500,
            keep_last: 3,
            valid_every: 500,
            valid_batches: 50,
            seed: 0,
            output_dir: PathBuf::from("runs/train"),
            resume: false,
            init_from: None,
            log_every: 10,
            stop_at_step: None,
            extra_devices: Vec::new(),
        }
    }
}

impl TrainOptions {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Options(m));
        if self.seq_len < 2 || self.batch_size == 0 || self.grad_accum == 0 {
            return bad(format!(
                "seq_len must be ≥ 2 (a later segment is BOS and at least one token), batch_size \
                 and grad_accum ≥ 1; found {}, {}, {}",
                self.seq_len, self.batch_size, self.grad_accum
            ));
        }
        if self.max_steps == Some(0) || self.epochs == Some(0) {
            return bad("max_steps and epochs must be ≥ 1 when given".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr = {} must be finite and > 0", self.lr));
        }
        if !(self.lora_lr_mult.is_finite() && self.lora_lr_mult >= 0.0) {
            return bad(format!("lora_lr_mult = {} must be ≥ 0", self.lora_lr_mult));
        }
        if !(self.drift_lr_mult.is_finite() && self.drift_lr_mult >= 0.0) {
            return bad(format!(
                "drift_lr_mult = {} must be ≥ 0",
                self.drift_lr_mult
            ));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(format!(
                "warmup_ratio = {} must lie in [0, 1)",
                self.warmup_ratio
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay = {} must be ≥ 0", self.weight_decay));
        }
        if self.clip_norm.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return bad("clip_norm must be finite and > 0 when given".into());
        }
        let devices = 1 + self.extra_devices.len();
        if devices > 1 && self.batch_size < devices {
            return bad(format!(
                "data-parallel training over {devices} devices needs batch_size ≥ {devices} \
                 (each device trains whole streams); batch_size is {}",
                self.batch_size
            ));
        }
        Ok(())
    }

    /// The training batcher for a base whose BOS is `bos`: every segment after a document's
    /// first begins with it, as in evaluation and generation.
    fn batcher_config(&self, bos: u32) -> BatcherConfig {
        let epochs = match (self.epochs, self.max_steps) {
            (Some(e), _) => Some(e),
            (None, Some(_)) => None,
            (None, None) => Some(1),
        };
        BatcherConfig::new(self.seq_len, self.batch_size)
            .with_layout(SegmentLayout::with_bos(self.seq_len, bos))
            .with_shuffle(self.seed)
            .with_epochs(epochs)
    }
}

/// One validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidPoint {
    /// Optimizer steps taken.
    pub step: usize,
    /// Token-mean LM cross-entropy (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub ppl: f64,
    /// Tokens scored.
    pub tokens: usize,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Optimizer steps taken in total (including those before a resume).
    pub steps: usize,
    /// The step the run resumed from, if it did.
    pub resumed_from: Option<usize>,
    /// Real input tokens trained on, in total.
    pub tokens: u64,
    /// Training wall time, seconds (validation and checkpoints excluded), in total.
    pub train_seconds: f64,
    /// `tokens / train_seconds`.
    pub tokens_per_sec: f64,
    /// `(step, total loss)` of this run's steps.
    pub train_loss: Vec<(usize, f64)>,
    /// `(step, LM loss)` of this run's steps.
    pub train_lm: Vec<(usize, f64)>,
    /// This run's validations.
    pub valid: Vec<ValidPoint>,
    /// The checkpoint written last.
    pub final_checkpoint: Option<PathBuf>,
}

/// The parameter groups with their own learning-rate multiplier.
#[derive(Debug, Clone)]
pub struct LrGroups {
    /// The LoRA factors (`lora_lr_mult`).
    pub lora: ParamGroup,
    /// The drift calibrator's `A`, `b` (`drift_lr_mult`).
    pub drift: ParamGroup,
}

impl LrGroups {
    /// The groups of a HippoFormer.
    pub fn new() -> Result<Self> {
        Ok(Self {
            lora: checkpoint::lora_group()?,
            drift: checkpoint::drift_group()?,
        })
    }
}

/// The learning rates of one step: `lr` for every parameter, `lr · lora_lr_mult` for the LoRA
/// factors, `lr · drift_lr_mult` for the drift correction.
pub fn learning_rates(lr: f64, opts: &TrainOptions, groups: &LrGroups) -> ModuleLearningRate {
    ModuleLrScheduler::new(lr)
        .with_group(groups.lora.clone(), lr * opts.lora_lr_mult)
        .with_group(groups.drift.clone(), lr * opts.drift_lr_mult)
        .step()
}

fn default_drift_lr_mult() -> f64 {
    0.01
}

/// The optimizer: AdamW (β = 0.9, 0.999, ε = 1e-8) with decoupled weight decay.
pub fn optimizer(weight_decay: f64) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(weight_decay as f32)
        .init()
}

fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn host_f64(t: Tensor<1>) -> f64 {
    t.to_data().iter::<f64>().next().unwrap_or(f64::NAN)
}

/// Mean salience and fraction above 0.5 over real tokens.
fn salience_summary(salience: &Tensor<2>, valid: &Tensor<2, Bool>) -> (f64, f64, usize) {
    let s: Vec<f64> = salience.to_data().iter::<f64>().collect();
    let v: Vec<bool> = valid.to_data().iter::<bool>().collect();
    let real: Vec<f64> = s
        .iter()
        .zip(&v)
        .filter(|(_, v)| **v)
        .map(|(s, _)| *s)
        .collect();
    let n = real.len();
    if n == 0 {
        return (0.0, 0.0, 0);
    }
    let mean = real.iter().sum::<f64>() / n as f64;
    let tagged = real.iter().filter(|x| **x > 0.5).count() as f64 / n as f64;
    (mean, tagged, n)
}

/// Validation: LM loss and perplexity over the first `valid_batches` batches of `corpus`
/// streamed in order (no shuffle, every document of ≥ 2 tokens), with memory carried per stream
/// and committed as in training, on a read-only copy of the model (no autodiff, no dropout, no
/// running-statistics update). Every validation reads the same batches, so values are
/// comparable across steps.
pub fn validate(
    model: &HippoFormer,
    corpus: Arc<TokenizedCorpus>,
    seq_len: usize,
    batch_size: usize,
    valid_batches: usize,
) -> Result<ValidPoint> {
    let m = model.valid();
    let device = m.drift.b.val().device();
    let cfg = BatcherConfig::new(seq_len, batch_size)
        .with_layout(model.segment_layout(seq_len))
        .with_min_tokens(2)
        .with_epochs(Some(1));
    let batcher = StreamBatcher::new(corpus, cfg)?;
    let mut run = StreamRunner::new(&m, batch_size, &device);
    let (mut nll, mut tokens) = (0.0f64, 0usize);
    for batch in batcher.take(valid_batches.max(1)) {
        let step = run.read(&batch)?;
        let terms = m.loss_on(&step.output, &step.tensors);
        nll += host_f64(terms.lm) * terms.tokens as f64;
        tokens += terms.tokens;
        run.write(&step)?;
    }
    let loss = if tokens > 0 {
        nll / tokens as f64
    } else {
        f64::NAN
    };
    Ok(ValidPoint {
        step: 0,
        loss,
        ppl: loss.exp(),
        tokens,
    })
}

/// The loss terms of a micro-batch (unweighted means over its tokens), or of a step (their
/// weighted mean), on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossValues {
    /// The training objective `Σ wᵢ · termᵢ`.
    pub total: f64,
    /// Token-mean LM cross-entropy.
    pub lm: f64,
    /// Importance-weighted cross-entropy.
    pub salience_weighted: f64,
    /// Salience sparsity (mean binary entropy).
    pub sparsity: f64,
    /// Memory utilisation term.
    pub memory_util: f64,
    /// Drift regulariser.
    pub drift_reg: f64,
    /// Salience usefulness BCE.
    pub usefulness: f64,
}

impl LossValues {
    /// The terms of `terms`, read back in one host copy.
    pub fn of(terms: &LossTerms) -> Self {
        let parts = Tensor::cat(
            vec![
                terms.total.clone(),
                terms.lm.clone(),
                terms.salience_weighted.clone(),
                terms.sparsity.clone(),
                terms.memory_util.clone(),
                terms.drift_reg.clone(),
                terms.usefulness.clone(),
            ],
            0,
        );
        let v: Vec<f64> = parts.to_data().iter::<f64>().collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
        Self {
            total: at(0),
            lm: at(1),
            salience_weighted: at(2),
            sparsity: at(3),
            memory_util: at(4),
            drift_reg: at(5),
            usefulness: at(6),
        }
    }

    /// Adds `w · other`, term by term.
    fn add_scaled(&mut self, other: &Self, w: f64) {
        self.total += w * other.total;
        self.lm += w * other.lm;
        self.salience_weighted += w * other.salience_weighted;
        self.sparsity += w * other.sparsity;
        self.memory_util += w * other.memory_util;
        self.drift_reg += w * other.drift_reg;
        self.usefulness += w * other.usefulness;
    }
}

/// What one shard of a micro-batch produced.
struct ShardOut {
    grads: GradientsParams,
    /// Unweighted shard means.
    losses: LossValues,
    salience: f64,
    tagged: f64,
    drift: f64,
    mem: MemoryState,
    /// Data-parallel shards: the drift calibrator's input and mask, for the running statistics.
    observed: Option<(Tensor<3>, Tensor<2, Bool>)>,
}

/// Forward, loss and backward of one (shard of a) micro-batch on `model` (on `device`), then
/// the memory commit, through the model's [`StreamRunner`] (detached). `weight`: the factor of
/// this shard's loss in the batch loss (`None`: the whole batch, loss used as is).
fn shard_step(
    model: &HippoFormer,
    batch: &SegmentBatch,
    mem: MemoryState,
    device: &Device,
    weight: Option<f64>,
    step: usize,
    last_checkpoint: &Option<PathBuf>,
) -> Result<ShardOut> {
    let mut run = StreamRunner::from_state(model, mem, device).detached();
    let read = run.read(batch)?;
    let out = &read.output;
    let terms = model.loss_on(out, &read.tensors);
    let losses = LossValues::of(&terms);
    if !losses.total.is_finite() {
        return Err(TrainError::NonFinite {
            step,
            what: "loss",
            value: losses.total,
            last_checkpoint: last_checkpoint.clone(),
        });
    }
    let loss = match weight {
        None => terms.total,
        Some(w) => terms.total.mul_scalar(w),
    };
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let (salience, tagged, _) = salience_summary(&out.salience.salience, &out.valid);
    let drift = out
        .drift
        .as_ref()
        .map_or(0.0, |d| model.drift.stats(d, &out.valid).mean_drift);
    run.write(&read)?;
    let mem = run.into_state()?;
    let observed = weight.map(|_| (out.base_hidden.clone().detach(), out.valid.clone()));
    Ok(ShardOut {
        grads,
        losses,
        salience,
        tagged,
        drift,
        mem,
        observed,
    })
}

/// Micro-batch statistics summed over a step.
#[derive(Default)]
struct StepSums {
    losses: LossValues,
    salience: f64,
    tagged: f64,
    drift: f64,
    micro: usize,
    tokens: u64,
    targets: usize,
}

impl StepSums {
    /// Adds a shard's values: losses weighted by `w` (its share of the targets), per-token
    /// statistics by `w_real` (its share of the real tokens).
    fn add(&mut self, o: &ShardOut, w: f64, w_real: f64) {
        self.losses.add_scaled(&o.losses, w);
        self.salience += w_real * o.salience;
        self.tagged += w_real * o.tagged;
        self.drift += w_real * o.drift;
    }
}

/// A training run between optimizer steps: the model, its optimizer, the batcher's position
/// and every stream's memory (see the [module docs](self)).
///
/// [`Trainer::new`] starts a run (resuming from the newest verified checkpoint with
/// `opts.resume`, or starting from `opts.init_from`); [`Trainer::step`] takes one optimizer
/// step; [`Trainer::save`] writes a checkpoint; [`Trainer::run`] steps to the end, saving every
/// `checkpoint_every` steps and at the end, and reports each step to a callback. The trainer
/// draws nothing and writes only under `opts.output_dir`.
pub struct Trainer {
    model: HippoFormer,
    optim: ModuleOptimizer,
    groups: LrGroups,
    batcher: StreamBatcher,
    mem: MemoryState,
    /// Data parallel over more than one device: the shards' memory (`mem` is then their join).
    shards: Option<parallel::Shards>,
    ad: Device,
    opts: TrainOptions,
    base_ref: BaseRef,
    ckpt_root: PathBuf,
    valid_corpus: Option<Arc<TokenizedCorpus>>,
    metrics: Option<MetricsWriter>,
    total_steps: usize,
    step: usize,
    tokens_total: u64,
    train_seconds: f64,
    calibrated: bool,
    exhausted: bool,
    last_checkpoint: Option<PathBuf>,
    checkpointed_at: Option<usize>,
    summary: TrainSummary,
}

impl Trainer {
    /// Prepares a run: the HippoFormer over the frozen `base` (loaded from `base_path`, file or
    /// directory; its fingerprint goes into every checkpoint) on `device`'s autodiff twin,
    /// `config` (saved with every checkpoint), the batcher over `train_corpus`. With
    /// `opts.resume` it continues from the newest checkpoint under `opts.output_dir` that
    /// verifies; otherwise from `opts.init_from` if given.
    pub fn new(
        base: Gemma,
        base_path: &Path,
        config: HippoFormerConfig,
        train_corpus: Arc<TokenizedCorpus>,
        valid_corpus: Option<Arc<TokenizedCorpus>>,
        opts: &TrainOptions,
        device: &Device,
    ) -> Result<Self> {
        opts.validate()?;
        config.validate()?;
        let ad = autodiff(device);
        let out_dir = opts.output_dir.clone();
        std::fs::create_dir_all(&out_dir).map_err(|e| io(&out_dir, e))?;
        let base_ref = BaseRef::of(base_path)?;
        let batcher = StreamBatcher::new(
            train_corpus,
            opts.batcher_config(base.config().bos_token_id),
        )?;
        let total_steps = match opts.max_steps {
            Some(m) if opts.epochs.is_none() => m,
            max => {
                let batches = batcher.clone().count();
                let per_data = batches.div_ceil(opts.grad_accum).max(1);
                max.map_or(per_data, |m| m.min(per_data))
            }
        };
        // Module initialisation is seeded by the config (LoRA factors are drawn inside `new`).
        ad.seed(config.seed);
        let base = base.train().to_device(&ad);
        let model = HippoFormer::new(base, config, &ad)?;
        let mem = model.empty_state(opts.batch_size, &ad);
        let mut t = Self {
            model,
            optim: optimizer(opts.weight_decay),
            groups: LrGroups::new()?,
            batcher,
            mem,
            shards: None,
            ad,
            opts: opts.clone(),
            base_ref,
            ckpt_root: out_dir.join("checkpoints"),
            valid_corpus,
            metrics: None,
            total_steps,
            step: 0,
            tokens_total: 0,
            train_seconds: 0.0,
            calibrated: false,
            exhausted: false,
            last_checkpoint: None,
            checkpointed_at: None,
            summary: TrainSummary {
                steps: 0,
                resumed_from: None,
                tokens: 0,
                train_seconds: 0.0,
                tokens_per_sec: 0.0,
                train_loss: Vec::new(),
                train_lm: Vec::new(),
                valid: Vec::new(),
                final_checkpoint: None,
            },
        };
        let resumed_from = if opts.resume { t.resume()? } else { None };
        if resumed_from.is_none()
            && let Some(dir) = &opts.init_from
        {
            // The weights only: the run's config may be a variant of the checkpoint's (another
            // buffer size, salience mode, …) as long as the trainable tensors match.
            let differs =
                checkpoint::config_differences(&checkpoint::read_config(dir)?, &t.model.config);
            let (m, meta) = checkpoint::load_weights_into(t.model, dir, &t.base_ref)?;
            t.model = m;
            tracing::info!(
                checkpoint = %dir.display(),
                from_step = meta.step,
                config_differs_in = ?differs,
                "initialised from"
            );
        }
        let devices: Vec<Device> = std::iter::once(t.ad.clone())
            .chain(opts.extra_devices.iter().map(autodiff))
            .collect();
        if devices.len() > 1 {
            tracing::info!(devices = ?devices, "data-parallel training");
            t.shards = Some(parallel::Shards::new(devices, &t.mem, opts.batch_size));
        }
        std::fs::write(out_dir.join("config.toml"), t.model.config.to_toml())
            .map_err(|e| io(&out_dir.join("config.toml"), e))?;
        t.metrics = Some(MetricsWriter::open(
            &out_dir.join("metrics.jsonl"),
            resumed_from,
        )?);
        t.calibrated = !t.model.config.drift || t.model.drift.anchor_count() > 0;
        t.summary.steps = t.step;
        t.summary.resumed_from = resumed_from;
        t.summary.tokens = t.tokens_total;
        t.summary.train_seconds = t.train_seconds;
        t.checkpointed_at = resumed_from;
        Ok(t)
    }

    /// Loads the newest checkpoint under the output directory that verifies (model, optimizer,
    /// memory, batcher position, counters); `None` if there is none.
    fn resume(&mut self) -> Result<Option<usize>> {
        let Some((s, dir)) = state::latest_verified_checkpoint(&self.ckpt_root)? else {
            return Ok(None);
        };
        let opts = &self.opts;
        let ts = state::read_trainer_state(&dir)?;
        if ts.seed != opts.seed || ts.grad_accum != opts.grad_accum {
            return Err(TrainError::Options(format!(
                "cannot resume from {}: it was trained with seed {} and grad_accum {}, these \
                 options say {} and {}",
                dir.display(),
                ts.seed,
                ts.grad_accum,
                opts.seed,
                opts.grad_accum
            )));
        }
        if ts.total_steps != self.total_steps {
            tracing::warn!(
                saved = ts.total_steps,
                now = self.total_steps,
                "the schedule length changed on resume; the learning rates will differ from \
                 the original run's"
            );
        }
        let model = self.model.clone();
        let (m, _) = checkpoint::load_into(model, &dir, &self.base_ref)?;
        self.model = m;
        let opt_file = dir.join(state::OPTIMIZER_FILE);
        let record =
            burn::optim::OptimizerRecord::load(&opt_file).map_err(|e| TrainError::Checkpoint {
                path: opt_file.clone(),
                message: e.to_string(),
            })?;
        self.optim = optimizer(opts.weight_decay).load_record(record);
        let d = self.model.base.config().hidden_size;
        self.mem = state::load_memory(
            &dir.join(state::MEMORY_FILE),
            [opts.batch_size, self.model.config.buffer_size, d],
            &self.ad,
        )?;
        self.batcher.restore(&ts.batcher)?;
        self.step = ts.step;
        self.tokens_total = ts.tokens;
        self.train_seconds = ts.train_seconds;
        self.last_checkpoint = Some(dir.clone());
        tracing::info!(step = self.step, checkpoint = %dir.display(), "resumed");
        Ok(Some(s))
    }

    /// The model as it stands.
    pub fn model(&self) -> &HippoFormer {
        &self.model
    }

    /// Optimizer steps taken (those before a resume included).
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// Whether the run has nothing left to do: every step taken, `opts.stop_at_step` reached,
    /// or the training data exhausted.
    pub fn is_done(&self) -> bool {
        self.exhausted
            || self.step >= self.total_steps
            || self.opts.stop_at_step.is_some_and(|s| self.step >= s)
    }

    /// One optimizer step over `grad_accum` micro-batches, then validation when it is due;
    /// returns the step's metrics (also appended to `metrics.jsonl`), or `None` when the run is
    /// done (see [`Trainer::is_done`]). Checkpoints are [`Trainer::save`]'s.
    pub fn step(&mut self) -> Result<Option<StepMetrics>> {
        if self.is_done() {
            return Ok(None);
        }
        let started = Instant::now();
        let (opts, step) = (&self.opts, self.step);
        self.ad
            .seed(splitmix64(opts.seed ^ splitmix64(step as u64)));
        let lr = schedule::lr_at(
            opts.schedule,
            opts.lr,
            opts.warmup_ratio,
            step,
            self.total_steps,
        );
        let mut accum = GradientsAccumulator::<HippoFormer>::new();
        let mut sums = StepSums::default();
        while sums.micro < opts.grad_accum {
            let Some(batch) = self.batcher.next() else {
                break;
            };
            if !self.calibrated {
                let t = SegmentTensors::new(&batch, &self.ad);
                self.calibrated = self.model.calibrate_drift(t.ids, t.valid)?;
            }
            match self.shards.as_mut() {
                None => {
                    let mem = self.mem.clone();
                    let out = shard_step(
                        &self.model,
                        &batch,
                        mem,
                        &self.ad,
                        None,
                        step,
                        &self.last_checkpoint,
                    )?;
                    sums.add(&out, 1.0, 1.0);
                    accum.accumulate(&self.model, out.grads);
                    self.mem = out.mem;
                }
                Some(shards) => shards.micro_batch(
                    &mut self.model,
                    &batch,
                    step,
                    &self.last_checkpoint,
                    &mut sums,
                    &mut accum,
                )?,
            }
            sums.tokens += batch.num_valid() as u64;
            sums.targets += batch.num_targets();
            sums.micro += 1;
        }
        if sums.micro == 0 {
            tracing::info!(step, "the training data is exhausted");
            self.exhausted = true;
            return Ok(None);
        }
        if let Some(shards) = &self.shards {
            self.mem = shards.joined();
        }
        let n = sums.micro as f64;
        let (grads, grad_norm) =
            clip::scale_and_clip(&self.model, accum.grads(), 1.0 / n, opts.clip_norm);
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                what: "gradient norm",
                value: grad_norm,
                last_checkpoint: self.last_checkpoint.clone(),
            });
        }
        let model = self.model.clone();
        self.model = self
            .optim
            .step(learning_rates(lr, opts, &self.groups), model, grads);
        self.step += 1;
        let step = self.step;
        let secs = started.elapsed().as_secs_f64();
        self.train_seconds += secs;
        self.tokens_total += sums.tokens;

        let mut valid_point = None;
        if let Some(vc) = &self.valid_corpus {
            let due = (opts.valid_every > 0 && step.is_multiple_of(opts.valid_every))
                || step == self.total_steps;
            if due {
                let mut p = validate(
                    &self.model,
                    vc.clone(),
                    opts.seq_len,
                    opts.batch_size,
                    opts.valid_batches,
                )?;
                p.step = step;
                tracing::info!(step, valid_loss = p.loss, valid_ppl = p.ppl, "validation");
                self.summary.valid.push(p);
                valid_point = Some(p);
            }
        }
        let mean = |x: f64| x / n;
        let l = sums.losses;
        let m = StepMetrics {
            step,
            epoch: self.batcher.epoch(),
            loss: mean(l.total),
            lm: mean(l.lm),
            salience_weighted: mean(l.salience_weighted),
            sparsity: mean(l.sparsity),
            memory_util: mean(l.memory_util),
            drift_reg: mean(l.drift_reg),
            usefulness: mean(l.usefulness),
            mean_salience: mean(sums.salience),
            tagged_ratio: mean(sums.tagged),
            buffer_util: self.model.memory.stats(&self.mem).utilisation,
            mean_drift: mean(sums.drift),
            grad_norm,
            lr,
            lora_lr: lr * opts.lora_lr_mult,
            tokens: sums.tokens,
            targets: sums.targets,
            tokens_per_sec: sums.tokens as f64 / secs.max(1e-9),
            step_seconds: secs,
            valid_loss: valid_point.map(|p| p.loss),
            valid_ppl: valid_point.map(|p| p.ppl),
        };
        if let Some(w) = self.metrics.as_mut() {
            w.write(&m)?;
        }
        self.summary.train_loss.push((step, m.loss));
        self.summary.train_lm.push((step, m.lm));
        Ok(Some(m))
    }

    /// Writes the checkpoint of the current step atomically under `checkpoints/step-N`
    /// (model, optimizer, memory, batcher position, counters; sealed with hashes) and keeps the
    /// newest `keep_last`; returns its directory.
    pub fn save(&mut self) -> Result<PathBuf> {
        let opts = &self.opts;
        let (model, optim, mem) = (&self.model, &self.optim, &self.mem);
        let (step, total_steps) = (self.step, self.total_steps);
        let trainer_state = TrainerState {
            format: state::TRAINER_FORMAT,
            step,
            total_steps,
            seed: opts.seed,
            grad_accum: opts.grad_accum,
            batcher: self.batcher.state(),
            tokens: self.tokens_total,
            train_seconds: self.train_seconds,
        };
        let base_ref = &self.base_ref;
        let dir = state::write_atomic(&self.ckpt_root, step, opts.keep_last, |dir| {
            let tensors = checkpoint::write_parts(model, dir)?;
            let p = dir.join(state::OPTIMIZER_FILE);
            optim
                .to_record()
                .save(&p)
                .map_err(|e| TrainError::Checkpoint {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
            state::save_memory(mem, &dir.join(state::MEMORY_FILE))?;
            state::write_trainer_state(dir, &trainer_state)?;
            // Last: hashes of every file above, then meta.json (atomically).
            checkpoint::seal(dir, step as u64, base_ref, tensors)?;
            Ok(())
        })?;
        self.last_checkpoint = Some(dir.clone());
        self.checkpointed_at = Some(step);
        Ok(dir)
    }

    /// Steps until the run is done, saving every `checkpoint_every` steps; `progress` sees every
    /// step's metrics with the run's total steps. Then [`Trainer::finish`].
    pub fn run(
        mut self,
        progress: &mut dyn FnMut(&StepMetrics, usize),
    ) -> Result<(HippoFormer, TrainSummary)> {
        while let Some(m) = self.step()? {
            progress(&m, self.total_steps);
            let every = self.opts.checkpoint_every;
            if every > 0 && self.step.is_multiple_of(every) {
                self.save()?;
            }
        }
        self.finish()
    }

    /// Saves the last step unless it is saved already, and returns the model with the summary.
    pub fn finish(mut self) -> Result<(HippoFormer, TrainSummary)> {
        if self.checkpointed_at != Some(self.step) {
            self.save()?;
        }
        let mut summary = self.summary;
        summary.steps = self.step;
        summary.tokens = self.tokens_total;
        summary.train_seconds = self.train_seconds;
        summary.tokens_per_sec = self.tokens_total as f64 / self.train_seconds.max(1e-9);
        summary.final_checkpoint = self.last_checkpoint;
        tracing::info!(
            steps = self.step,
            tokens = self.tokens_total,
            tokens_per_sec = summary.tokens_per_sec,
            checkpoint = ?summary.final_checkpoint,
            "training done"
        );
        Ok((self.model, summary))
    }
}

fn autodiff(d: &Device) -> Device {
    if d.is_autodiff() {
        d.clone()
    } else {
        d.clone().autodiff()
    }
}

/// Trains and returns the trained model with the summary: [`Trainer::new`] then
/// [`Trainer::run`] with no progress report (see the [module docs](self)).
pub fn train_model(
    base: Gemma,
    base_path: &Path,
    config: HippoFormerConfig,
    train_corpus: Arc<TokenizedCorpus>,
    valid_corpus: Option<Arc<TokenizedCorpus>>,
    opts: &TrainOptions,
    device: &Device,
) -> Result<(HippoFormer, TrainSummary)> {
    Trainer::new(
        base,
        base_path,
        config,
        train_corpus,
        valid_corpus,
        opts,
        device,
    )?
    .run(&mut |_, _| {})
}

/// [`train_model`] without the model.
pub fn train(
    base: Gemma,
    base_path: &Path,
    config: HippoFormerConfig,
    train_corpus: Arc<TokenizedCorpus>,
    valid_corpus: Option<Arc<TokenizedCorpus>>,
    opts: &TrainOptions,
    device: &Device,
) -> Result<TrainSummary> {
    train_model(
        base,
        base_path,
        config,
        train_corpus,
        valid_corpus,
        opts,
        device,
    )
    .map(|(_, s)| s)
}
