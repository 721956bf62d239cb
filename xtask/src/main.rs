//! `cargo xtask`: the front door of HippoFormer-rs.
//!
//! Every user-facing job is a subcommand here; the library crates do no I/O of their own
//! beyond reading the paths they are given. The CPU backend (`flex`) is the default; `--device`
//! selects another one where it was compiled in (features `cuda`, `vulkan`).
//!
//! Exit codes: 0 success, 1 failure, 2 bad input (usage, missing or malformed files).

mod ablate;
mod assets;
mod audit;
mod bench;
mod calibrate;
mod demo;
mod device;
mod eval;
mod generate;
mod import;
mod progress;
mod score;
mod test;
mod train;

use std::process::ExitCode;

/// mimalloc instead of the system allocator: tensor code allocates and frees buffers of
/// megabytes many times per forward, and glibc hands those back to the OS (mmap/munmap), so
/// each one comes back as fresh pages the kernel must fault in and zero.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (`mimalloc.h` of libmimalloc-sys
/// 0.1.49, pinned in the workspace); a test checks that it and its neighbours hold their
/// defaults (`options.c`: the purge delay's is 1,000 ms).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to give freed memory back to the OS (purge delay −1) unless the user
/// set `MIMALLOC_PURGE_DELAY`. With its default delay (1 s), training over a full buffer still
/// spent more time in the kernel, faulting in and zeroing pages, than in user code
/// (BENCHMARKS.md, "Allocator"). The cost is a peak resident size that is not returned.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's global integer options; mimalloc reads it at each
        // purge decision, and no memory is touched here.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

use clap::{Parser, Subcommand};

/// HippoFormer-rs tasks.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fetch and verify the real Gemma-3-270M, its tokenizer and the corpora into the cache dir.
    Assets(assets::AssetsArgs),
    /// Per-token NLL and perplexity of a text or id file under a base model.
    Score(score::ScoreArgs),
    /// Throughput benchmarks (matmul rate, Gemma forward and decode).
    Bench(bench::BenchArgs),
    /// Set the memory's retrieval scale θ and mixture weight λ on held-out text (no backprop).
    Calibrate(calibrate::CalibrateArgs),
    /// The main job: real Gemma-3-270M + real text; train briefly, evaluate base vs HippoFormer.
    Demo(demo::DemoArgs),
    /// Train HippoFormer on document streams (resumable).
    Train(train::TrainArgs),
    /// Train and evaluate every ablation variant over several seeds; paired tests vs full.
    Ablate(ablate::AblateArgs),
    /// Fetch the test assets, then run the whole test suite (release mode).
    Test(test::TestArgs),
    /// Check that logits at t never depend on later tokens, for a config and its ablations.
    AuditCausality(audit::AuditArgs),
    /// Import the reference implementation's PyTorch checkpoint into a native checkpoint.
    ImportReference(import::ImportArgs),
    /// Evaluate a checkpoint (or config) against its base: perplexities and the paper's metrics.
    Eval(eval::EvalArgs),
    /// Generate text with a HippoFormer checkpoint or the bare base model (streamed).
    Generate(generate::GenerateArgs),
}

/// An error caused by the user's input: exits with code 2.
#[derive(Debug)]
pub struct UsageError(anyhow::Error);

impl UsageError {
    /// A usage error with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(anyhow::anyhow!(msg.into()))
    }

    /// Marks an error as caused by bad input.
    pub fn wrap(e: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Self(e))
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for UsageError {}

/// The model argument, defaulting to the Gemma-3-270M fetched by `cargo xtask assets`.
pub fn model_arg(explicit: Option<&str>) -> anyhow::Result<String> {
    if let Some(m) = explicit {
        return Ok(m.to_string());
    }
    let p = hippo_gemma::load::default_model_path()
        .ok_or_else(|| UsageError::wrap(anyhow::anyhow!("HOME is unset: pass --model")))?;
    if !p.exists() {
        return Err(UsageError::wrap(anyhow::anyhow!(
            "the default model {} is missing: run `cargo xtask assets`, or pass --model",
            p.display()
        )));
    }
    Ok(p.display().to_string())
}

/// The base model of a HippoFormer run: `--model` if given, else the config's `base_model`;
/// either spelled `default` means the Gemma-3-270M fetched by `cargo xtask assets`.
pub fn base_model_arg(explicit: Option<&str>, config_base: &str) -> anyhow::Result<String> {
    match explicit.unwrap_or(config_base) {
        "default" => model_arg(None),
        m => Ok(m.to_string()),
    }
}

/// Marks an error as caused by bad input (exit code 2).
pub fn usage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    UsageError::wrap(e.into())
}

/// `git rev-parse HEAD`, or `unknown`.
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The tokenizer.json of a run: `explicit`, else the one beside the model; otherwise a usage
/// error ending in `advice` (e.g. "pass --tokenizer").
pub fn tokenizer_path(
    explicit: Option<&std::path::Path>,
    location: &hippo_gemma::ModelLocation,
    advice: &str,
) -> anyhow::Result<std::path::PathBuf> {
    match explicit {
        Some(t) => Ok(t.to_path_buf()),
        None => location.default_tokenizer().ok_or_else(|| {
            usage(anyhow::anyhow!(
                "no tokenizer.json beside {}; {advice}",
                location.path().display()
            ))
        }),
    }
}

/// The checkpoint directory `arg` names ([`hippo_train::trainer::state::resolve_checkpoint`]);
/// a usage error otherwise.
pub fn checkpoint_dir(arg: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    hippo_train::trainer::state::resolve_checkpoint(arg).map_err(usage)
}

/// What a checkpoint's `trainer.json` records: the training segment length and seed, if the
/// checkpoint was written by the trainer.
pub fn trained_with(dir: &std::path::Path) -> (Option<usize>, Option<u64>) {
    hippo_train::trainer::state::trained_with(dir).map_or((None, None), |(l, s)| (Some(l), Some(s)))
}

/// A corpus split tokenised with `tok`, through the one token cache under `$HIPPO_HOME`.
pub fn tokenized_split(
    spec: &hippo_data::CorpusSpec,
    split: hippo_data::Split,
    tok: &hippo_gemma::GemmaTokenizer,
) -> Result<hippo_data::TokenizedCorpus, hippo_data::DataError> {
    let home = hippo_data::default_home()?;
    hippo_data::TokenizedCorpus::load_or_build(spec, split, &home, tok, &home)
}

fn main() -> ExitCode {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match &cli.command {
        Command::Assets(args) => assets::run(args),
        Command::Score(args) => score::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Test(args) => test::run(args),
        Command::Train(args) => train::run(args),
        Command::Ablate(args) => ablate::run(args),
        Command::Demo(args) => demo::run(args),
        Command::AuditCausality(args) => audit::run(args),
        Command::ImportReference(args) => import::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Generate(args) => generate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let usage = e.chain().any(|c| {
                c.is::<UsageError>()
                    || c.downcast_ref::<hippo_gemma::GemmaError>()
                        .is_some_and(|g| {
                            matches!(
                                g,
                                hippo_gemma::GemmaError::ModelNotFound(_)
                                    | hippo_gemma::GemmaError::Config { .. }
                                    | hippo_gemma::GemmaError::UnknownArchitecture { .. }
                                    | hippo_gemma::GemmaError::CorruptWeights { .. }
                                    | hippo_gemma::GemmaError::MissingTensor { .. }
                                    | hippo_gemma::GemmaError::ShapeMismatch { .. }
                                    | hippo_gemma::GemmaError::TokenOutOfRange { .. }
                                    | hippo_gemma::GemmaError::Tokenizer { .. }
                            )
                        })
            });
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    /// The option index the purge setting uses is mimalloc's purge delay: it and its neighbours
    /// hold the defaults of `options.c` (deprecated_segment_reset 0, deprecated_eager_commit_delay
    /// 1, purge_delay 1000, use_numa_nodes 0, disallow_os_alloc 0), and setting it reads back.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the user's setting, not the default, is what the option holds
        }
        // SAFETY: reads and sets mimalloc's global integer options; no memory is touched.
        unsafe {
            let neighbours: Vec<_> = (13..=17)
                .map(|o| libmimalloc_sys::mi_option_get(o))
                .collect();
            assert_eq!(neighbours, [0, 1, 1000, 0, 0]);
            super::keep_freed_memory();
            assert_eq!(
                libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY),
                -1
            );
        }
    }
}
