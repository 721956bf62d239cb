//! The learning-rate schedule: linear warmup, then linear or cosine decay to 0.
//!
//! The rate is a pure function of the optimizer step, so resuming needs no scheduler state.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Decay after the warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Linear from the peak to 0 at the last step.
    #[default]
    Linear,
    /// Half a cosine from the peak to 0 at the last step.
    Cosine,
    /// The peak rate throughout (after the warmup).
    Constant,
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            "constant" => Ok(Self::Constant),
            other => Err(format!(
                "unknown schedule `{other}`: expected linear, cosine or constant"
            )),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Linear => "linear",
            Self::Cosine => "cosine",
            Self::Constant => "constant",
        })
    }
}

/// Steps of warmup for `total` steps: `ceil(ratio · total)`.
pub fn warmup_steps(warmup_ratio: f64, total: usize) -> usize {
    ((warmup_ratio * total as f64).ceil() as usize).min(total)
}

/// The rate of optimizer step `step` (0-based) of `total`: `peak·(step+1)/warmup` during the
/// warmup, then the decay over the remaining steps, reaching 0 one step past the end.
pub fn lr_at(schedule: Schedule, peak: f64, warmup_ratio: f64, step: usize, total: usize) -> f64 {
    let warmup = warmup_steps(warmup_ratio, total);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let p = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
    match schedule {
        Schedule::Linear => peak * (1.0 - p),
        Schedule::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
        Schedule::Constant => peak,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let lr = |s| lr_at(Schedule::Linear, 1.0, 0.2, s, 10);
        assert_eq!(warmup_steps(0.2, 10), 2);
        assert!((lr(0) - 0.5).abs() < 1e-12);
        assert!((lr(1) - 1.0).abs() < 1e-12);
        assert!((lr(2) - 1.0).abs() < 1e-12);
        assert!((lr(6) - 0.5).abs() < 1e-12);
        let c = |s| lr_at(Schedule::Cosine, 1.0, 0.0, s, 4);
        assert!((c(0) - 1.0).abs() < 1e-12);
        assert!((c(2) - 0.5).abs() < 1e-12);
        assert!(c(3) > 0.0 && c(3) < 0.5);
    }
}
