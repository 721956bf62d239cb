//! `cargo xtask test`: fetch what the tests need (the real Gemma-3-270M and corpora), then run
//! the whole test suite in release mode (debug tensor code is 60–125× slower).

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Arguments of `test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Extra arguments for `cargo test` (e.g. `-p hippo-gemma`, `-- --nocapture`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_args: Vec<String>,
}

/// Runs `test`.
pub fn run(args: &TestArgs) -> Result<()> {
    let home = crate::assets::hippo_home(None)?;
    crate::assets::ensure(&home).context("fetching the test assets")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "--release"]);
    if !args
        .cargo_args
        .iter()
        .any(|a| a == "-p" || a.starts_with("--package"))
    {
        cmd.arg("--workspace");
    }
    cmd.args(&args.cargo_args).env("HIPPO_HOME", &home);
    tracing::info!("running {:?}", cmd);
    let status = cmd.status().context("starting cargo test")?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}
