//! `cargo xtask import-reference`: import the reference implementation's PyTorch checkpoint into
//! a HippoFormer over a base model and write it as a native checkpoint
//! (`hippo_model::checkpoint::save`), printing the import report (reference key → our path, and
//! every checkpoint tensor left out, by name) and the parameter report.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hippo_model::checkpoint::{self, BaseRef};
use hippo_model::import::import_reference;
use hippo_model::{HippoError, HippoFormer, HippoFormerConfig};

use crate::UsageError;

/// Arguments of `import-reference`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The reference's checkpoint (`torch.save({"model_state_dict": …})` or a bare state dict).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// HippoFormer config (TOML) matching the checkpoint (LoRA r/α/targets, anchors, heads).
    #[arg(long)]
    pub config: PathBuf,
    /// Base model (overrides the config's base_model).
    #[arg(long)]
    pub model: Option<String>,
    /// Directory of the native checkpoint to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Write the checkpoint even when some HippoFormer tensors are missing from the file.
    #[arg(long)]
    pub allow_partial: bool,
    /// Device: cpu, cuda:N, vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs `import-reference`.
#[allow(clippy::print_stdout)]
pub fn run(args: &ImportArgs) -> Result<()> {
    let device = crate::device::parse(&args.device).map_err(UsageError::wrap)?;
    if !args.checkpoint.is_file() {
        bail!(UsageError::new(format!(
            "--checkpoint {} is not a file",
            args.checkpoint.display()
        )));
    }
    let mut cfg =
        HippoFormerConfig::from_toml_file(&args.config).map_err(|e| UsageError::wrap(e.into()))?;
    let model_arg = crate::base_model_arg(args.model.as_deref(), &cfg.base_model)?;
    cfg.base_model = model_arg.clone();
    let loaded = hippo_gemma::load(&model_arg, &device)?;
    let base_ref = BaseRef::of(loaded.location.path())?;
    let mut model = HippoFormer::new(loaded.model, cfg, &device)?;
    let report = import_reference(&mut model, &args.checkpoint).map_err(|e| match e {
        HippoError::ImportShape { .. } | HippoError::Checkpoint { .. } => {
            UsageError::wrap(e.into())
        }
        other => other.into(),
    })?;
    println!("{report}");
    if !report.is_complete() && !args.allow_partial {
        bail!(UsageError::new(format!(
            "{} HippoFormer tensors are not in the checkpoint (listed above); pass \
             --allow-partial to write the checkpoint anyway",
            report.not_in_checkpoint.len()
        )));
    }
    let step = report.step.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
    let meta = checkpoint::save(&model, &args.output, step, &base_ref)
        .with_context(|| format!("writing {}", args.output.display()))?;
    // Read back through the check every load makes (hashes of every file in meta.json).
    checkpoint::verify(&args.output)
        .with_context(|| format!("verifying {} after writing it", args.output.display()))?;
    println!("{}", model.parameter_report());
    println!(
        "wrote {} ({} tensors, step {})",
        args.output.display(),
        meta.tensors,
        meta.step
    );
    Ok(())
}
