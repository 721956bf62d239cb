//! Parameter report: how many parameters each part of a [`HippoFormer`] has, and which of them
//! train under its configuration.
//!
//! Every tensor the module tree holds is counted once, in one row and one column:
//!
//! * rows: `base` (the Gemma weights, LoRA factors excluded), `lora` (the factors
//!   `….lora.a` / `….lora.b`), `gate`, `drift`, `memory` (with the attention path's weights),
//!   `fusion` (the hidden-space path),
//!   `mix` (the probability-space path's gate and opening);
//! * columns: `trainable` (updated by training under this config), `frozen` (the base when it is
//!   frozen), `inactive` (a module switched off by an ablation: its parameters exist but are not
//!   in the forward, so they get no gradient), `state` (non-trainable running state: the drift
//!   calibrator's anchors and statistics).
//!
//! The classification follows what the model does: [`HippoFormer::new`] freezes the whole base
//! when LoRA is on (and attaches trainable factors) or when `freeze_base` is set; the forward uses
//! the gate only with `salience = learned`, the calibrator only with `drift`, the memory
//! projections only with `memory` (the value and consolidation projections only with a hidden
//! path, `fusion_space = hidden | both`), of the fusion only the opening `alpha` without `fusion`
//! (none of it without a hidden path), of the mixture only the opening without `fusion` (none of
//! it without a probability path), and nothing of the three without `memory`.

use std::fmt;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use serde::Serialize;

use crate::config::SalienceMode;
use crate::model::HippoFormer;

/// Paths of the drift calibrator's running state (Burn `RunningState`s, not trainable).
pub const DRIFT_STATE: [&str; 4] = [
    "drift.anchors",
    "drift.anchor_valid",
    "drift.running_mean",
    "drift.running_var",
];

/// A parameter's report row and treatment (`None` outside the model's modules).
pub type ParamClass = Option<(&'static str, ParamKind)>;

/// The rows of the report, in order.
pub const MODULES: [&str; 7] = ["base", "lora", "gate", "drift", "memory", "fusion", "mix"];

/// How one parameter tensor is treated under a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ParamKind {
    /// Updated by training.
    Trainable,
    /// Frozen base weight.
    Frozen,
    /// Belongs to a module the config switches off.
    Inactive,
    /// Non-trainable running state.
    State,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamRow {
    /// `base`, `lora`, `gate`, `drift`, `memory` or `fusion`.
    pub module: &'static str,
    /// Number of tensors.
    pub tensors: usize,
    /// Trainable elements.
    pub trainable: usize,
    /// Frozen elements.
    pub frozen: usize,
    /// Elements of switched-off parts.
    pub inactive: usize,
    /// Elements of running state.
    pub state: usize,
}

impl ParamRow {
    /// All elements of the row.
    pub fn total(&self) -> usize {
        self.trainable + self.frozen + self.inactive + self.state
    }
}

/// Per-module parameter counts of a model ([`HippoFormer::parameter_report`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamReport {
    /// One row per module, in [`MODULES`] order.
    pub rows: Vec<ParamRow>,
}

impl ParamReport {
    /// The row of `module` (see [`MODULES`]).
    pub fn row(&self, module: &str) -> Option<&ParamRow> {
        self.rows.iter().find(|r| r.module == module)
    }

    /// The column sums as a row named `total`.
    pub fn total(&self) -> ParamRow {
        self.rows.iter().fold(
            ParamRow {
                module: "total",
                tensors: 0,
                trainable: 0,
                frozen: 0,
                inactive: 0,
                state: 0,
            },
            |mut t, r| {
                t.tensors += r.tensors;
                t.trainable += r.trainable;
                t.frozen += r.frozen;
                t.inactive += r.inactive;
                t.state += r.state;
                t
            },
        )
    }
}

impl fmt::Display for ParamReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<8} {:>7} {:>13} {:>13} {:>11} {:>9} {:>13}",
            "module", "tensors", "trainable", "frozen", "inactive", "state", "total"
        )?;
        let total = self.total();
        for r in self.rows.iter().chain(std::iter::once(&total)) {
            writeln!(
                f,
                "{:<8} {:>7} {:>13} {:>13} {:>11} {:>9} {:>13}",
                r.module,
                r.tensors,
                r.trainable,
                r.frozen,
                r.inactive,
                r.state,
                r.total()
            )?;
        }
        let share = if total.total() == 0 {
            0.0
        } else {
            100.0 * total.trainable as f64 / total.total() as f64
        };
        write!(
            f,
            "trainable: {} of {} ({share:.3}%)",
            total.trainable,
            total.total()
        )
    }
}

/// Collects (path, elements) of every float tensor.
struct Paths {
    path: Vec<String>,
    found: Vec<(String, usize)>,
}

impl ModuleVisitor for Paths {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.found
            .push((self.path.join("."), param.lazy_shape().num_elements()));
    }
}

impl HippoFormer {
    /// The module (report row) and treatment of the parameter at `path` under this model's
    /// config. `None` for a path outside the model's modules.
    pub fn classify_param(&self, path: &str) -> ParamClass {
        let c = &self.config;
        let on = |active: bool| {
            if active {
                ParamKind::Trainable
            } else {
                ParamKind::Inactive
            }
        };
        let module = path.split('.').next()?;
        let hidden = c.fusion_space.hidden();
        let probability = c.fusion_space.probability();
        Some(match module {
            "base" if path.ends_with(".lora.a") || path.ends_with(".lora.b") => {
                ("lora", ParamKind::Trainable)
            }
            "base" if c.use_lora || c.freeze_base => ("base", ParamKind::Frozen),
            "base" => ("base", ParamKind::Trainable),
            "gate" => ("gate", on(c.salience == SalienceMode::Learned)),
            "drift" if DRIFT_STATE.contains(&path) => ("drift", ParamKind::State),
            "drift" => ("drift", on(c.drift)),
            // The value and consolidation projections serve only the hidden-space path.
            "memory"
                if path.starts_with("memory.value_proj.")
                    || path.starts_with("memory.consolidation_proj.") =>
            {
                ("memory", on(c.memory && hidden))
            }
            "memory" => ("memory", on(c.memory)),
            // The attention path's per-layer weight `g` belongs to the memory's read.
            "attention_weight" => (
                "memory",
                on(c.memory && c.memory_attention != crate::config::MemoryAttention::Off),
            ),
            "fusion" if path == "fusion.alpha" => ("fusion", on(c.memory && hidden)),
            "fusion" => ("fusion", on(c.memory && hidden && c.fusion)),
            "mix" if path == "mix.opening" => ("mix", on(c.memory && probability)),
            "mix" => ("mix", on(c.memory && probability && c.fusion)),
            _ => return None,
        })
    }

    /// Every float tensor's path, element count and treatment (see [`classify_param`]).
    ///
    /// [`classify_param`]: Self::classify_param
    pub fn parameter_list(&self) -> Vec<(String, usize, ParamClass)> {
        let mut v = Paths {
            path: Vec::new(),
            found: Vec::new(),
        };
        self.visit(&mut v);
        v.found
            .into_iter()
            .map(|(p, n)| {
                let class = self.classify_param(&p);
                (p, n, class)
            })
            .collect()
    }

    /// Per-module counts of trainable, frozen, inactive and state elements (no tensor is read).
    pub fn parameter_report(&self) -> ParamReport {
        let mut rows: Vec<ParamRow> = MODULES
            .iter()
            .map(|m| ParamRow {
                module: m,
                tensors: 0,
                trainable: 0,
                frozen: 0,
                inactive: 0,
                state: 0,
            })
            .collect();
        for (_, n, class) in self.parameter_list() {
            let Some((module, kind)) = class else {
                continue;
            };
            let Some(row) = rows.iter_mut().find(|r| r.module == module) else {
                continue;
            };
            row.tensors += 1;
            match kind {
                ParamKind::Trainable => row.trainable += n,
                ParamKind::Frozen => row.frozen += n,
                ParamKind::Inactive => row.inactive += n,
                ParamKind::State => row.state += n,
            }
        }
        ParamReport { rows }
    }
}
