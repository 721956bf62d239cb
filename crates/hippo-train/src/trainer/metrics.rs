//! Per-step metrics, one JSON object per line in `metrics.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;

/// One optimizer step's metrics (micro-batch means where a value is per micro-batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer steps taken, counting this one (1-based).
    pub step: usize,
    /// Epoch of the batcher after the step.
    pub epoch: usize,
    /// Weighted total loss.
    pub loss: f64,
    /// LM cross-entropy (nats per token).
    pub lm: f64,
    /// Salience-weighted LM loss.
    pub salience_weighted: f64,
    /// Salience sparsity (binary entropy).
    pub sparsity: f64,
    /// Memory-utilisation loss.
    pub memory_util: f64,
    /// Drift regulariser.
    pub drift_reg: f64,
    /// Salience usefulness loss (BCE against `σ(NLL_t − mean NLL)`).
    #[serde(default)]
    pub usefulness: f64,
    /// Mean salience over real tokens.
    pub mean_salience: f64,
    /// Fraction of real tokens with salience > 0.5.
    pub tagged_ratio: f64,
    /// Occupied fraction of the memory slots after the step.
    pub buffer_util: f64,
    /// Mean drift over real tokens (0 with drift off).
    pub mean_drift: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Learning rate of the LoRA factors.
    pub lora_lr: f64,
    /// Real input tokens of this step.
    pub tokens: u64,
    /// Scored targets of this step.
    pub targets: usize,
    /// Training throughput of this step (real input tokens per second).
    pub tokens_per_sec: f64,
    /// Wall time of this step, seconds.
    pub step_seconds: f64,
    /// Validation loss, when validated after this step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub valid_loss: Option<f64>,
    /// Validation perplexity, when validated after this step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub valid_ppl: Option<f64>,
}

/// Appends [`StepMetrics`] to a JSON-lines file.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsWriter {
    /// Opens `path`. A fresh run (`resumed_from = None`) truncates it; a resumed run keeps the
    /// lines of steps up to `resumed_from` and drops later ones (from the interrupted run).
    pub fn open(path: &Path, resumed_from: Option<usize>) -> Result<Self, TrainError> {
        let io = |e| TrainError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let kept = match resumed_from {
            Some(step) if path.exists() => std::fs::read_to_string(path)
                .map_err(io)?
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                        .is_some_and(|s| s as usize <= step)
                })
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            _ => String::new(),
        };
        std::fs::write(path, kept).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one line.
    pub fn write(&mut self, m: &StepMetrics) -> Result<(), TrainError> {
        let line = serde_json::to_string(m).map_err(|e| TrainError::Checkpoint {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        writeln!(self.file, "{line}").map_err(|e| TrainError::Io {
            path: self.path.clone(),
            source: e,
        })
    }
}
