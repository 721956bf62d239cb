//! `cargo xtask audit-causality`: perturb every token after position t of a multi-segment stream
//! and check that the logits at positions ≤ t are bit-identical, for a config (and, with
//! `--all-ablations`, for every ablation of it). Exits non-zero when any audit fails — which it
//! must for `query_mode = "sequence_mean"`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use hippo_model::audit::{AuditReport, audit, open_for_audit};
use hippo_model::{HippoFormer, HippoFormerConfig};

/// Arguments of `audit-causality`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// HippoFormer config (TOML); default: the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Base model (overrides the config's base_model).
    #[arg(long)]
    pub model: Option<String>,
    /// Also audit every ablation of the config.
    #[arg(long)]
    pub all_ablations: bool,
    /// Segment length.
    #[arg(long, default_value_t = 32)]
    pub seg: usize,
    /// Segments per stream.
    #[arg(long, default_value_t = 3)]
    pub segments: usize,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
    /// Device: cpu, cuda:N, vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs `audit-causality`.
#[allow(clippy::print_stdout)]
pub fn run(args: &AuditArgs) -> Result<()> {
    let device = crate::device::parse(&args.device).map_err(crate::UsageError::wrap)?;
    let cfg = HippoFormerConfig::from_toml_file_or_default(args.config.as_deref())
        .map_err(crate::usage)?;
    if args.seg < 2 || args.segments < 2 {
        bail!(crate::UsageError::new("need --seg ≥ 2 and --segments ≥ 2"));
    }
    let model_arg = crate::base_model_arg(args.model.as_deref(), &cfg.base_model)?;
    let base = hippo_gemma::load(&model_arg, &device)?.model;
    let mut variants = vec![("config".to_string(), cfg.clone())];
    if args.all_ablations {
        variants.extend(cfg.ablations().into_iter().map(|(n, c)| (n.to_string(), c)));
    }
    let vocab = base.config().vocab_size as u32;
    let n = args.seg * args.segments;
    let rows: Vec<Vec<u32>> = (0..2u32)
        .map(|r| {
            std::iter::once(base.config().bos_token_id)
                .chain((1..n as u32).map(|i| (i * 7919 + r * 104_729) % (vocab - 200) + 100))
                .collect()
        })
        .collect();
    let calib_ids: Vec<i64> = rows
        .iter()
        .flat_map(|r| r[..args.seg].iter().map(|&x| x as i64))
        .collect();
    let calib = Tensor::<2, Int>::from_data(TensorData::new(calib_ids, [2, args.seg]), &device);
    let calib_valid = Tensor::<2, Bool>::from_data(
        TensorData::new(vec![true; 2 * args.seg], [2, args.seg]),
        &device,
    );
    let cut = args.seg + args.seg / 2; // inside the second segment
    let mut reports: Vec<(String, bool, AuditReport)> = Vec::new();
    for (name, c) in variants {
        let leaky = c.is_leaky();
        let model = HippoFormer::new(base.clone(), c, &device)?;
        let h = model.base.hidden_states(calib.clone(), None);
        let model = open_for_audit(model, (h, calib_valid.clone()))?;
        let r = audit(&model, &rows, args.seg, cut, &device)?;
        tracing::info!(
            variant = %name,
            passed = r.passed,
            past = r.max_abs_diff_past,
            future = r.max_abs_diff_future,
            "causality audit"
        );
        reports.push((name, leaky, r));
    }
    if args.json {
        let v: Vec<_> = reports
            .iter()
            .map(|(n, leaky, r)| serde_json::json!({"variant": n, "leaky_config": leaky, "report": r}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let width = reports.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
        for (n, leaky, r) in &reports {
            println!(
                "{:<width$} {}  max |Δlogit| at t ≤ {}: {:e}   after: {:e}{}",
                n,
                if r.passed { "PASS" } else { "FAIL" },
                r.cut,
                r.max_abs_diff_past,
                r.max_abs_diff_future,
                if *leaky {
                    "   (query_mode = sequence_mean: a leak is expected)"
                } else {
                    ""
                }
            );
        }
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|(_, _, r)| !r.passed)
        .map(|(n, _, _)| n.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("causality audit failed for: {}", failed.join(", "));
    }
    Ok(())
}
