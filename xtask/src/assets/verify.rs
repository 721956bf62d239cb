//! Hashing, and checking the assets on disk against their pinned digests (`--check`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::manifest::{Extract, Manifest, Output};
use super::ui::Ui;
use super::{AssetPaths, hippo_home};

// ---------------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------------

/// Writer adapter that hashes (and reports progress on) everything written through it.
pub(super) struct HashWriter<W> {
    pub(super) inner: W,
    pub(super) hasher: Sha256,
    pub(super) bar: ProgressBar,
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
pub(super) fn hash_file(path: &Path, ui: &Ui) -> Result<String> {
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
pub(super) fn dir_digest(dir: &Path, suffix: &str, ui: &Ui) -> Result<(String, usize)> {
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
pub(super) enum State {
    Ok,
    Missing,
    Bad(String),
}

pub(super) fn check_output(home: &Path, out: &Output, ui: &Ui) -> Result<State> {
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

pub(super) fn verify_with(home: &Path, manifest: &Manifest, ui: &Ui) -> Result<AssetPaths> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::tests::{SOTU_A, SOTU_B, quiet, sha};

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
}
