//! Integrity of checkpoint directories: a sha256 per file, recorded in `meta.json`, and durable
//! writes.
//!
//! Writing ([`seal`] via [`crate::checkpoint::seal`]): every regular file of the directory (but
//! `meta.json` and dot-files) is fsynced and hashed; `meta.json` is then written last, atomically
//! ([`write_atomic`]: a temporary file beside it, fsynced, renamed over it), and the directory is
//! fsynced after the rename. `meta.json` is the commit mark: a directory without it is not a
//! checkpoint, and its hashes cover everything written before it.
//!
//! Reading ([`verify`]): every file `meta.json` names must exist and hash to the recorded value;
//! a mismatch is [`HippoError::Checkpoint`] naming the file and saying it is corrupt (expected
//! and found digests). Files `meta.json` does not name are not read.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{HippoError, Result};

fn err(path: &Path, message: impl Into<String>) -> HippoError {
    HippoError::Checkpoint {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Test-only delay, milliseconds, before each file of a checkpoint is sealed (and before its
/// `meta.json` is written): `HIPPO_TEST_CHECKPOINT_DELAY_MS`. It widens the window in which a
/// crash test can kill a process inside a checkpoint write; unset (always, outside tests) it
/// costs one environment lookup per checkpoint.
pub const DELAY_ENV: &str = "HIPPO_TEST_CHECKPOINT_DELAY_MS";

fn test_delay() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var(DELAY_ENV).ok()?.parse().ok()?;
    (ms > 0).then(|| std::time::Duration::from_millis(ms))
}

/// `<hex>` sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| err(path, e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| err(path, e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// fsyncs a directory (its entries: creations, renames). Errors are reported, except where the
/// platform cannot open a directory for syncing.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    match std::fs::File::open(dir) {
        Ok(d) => d
            .sync_all()
            .map_err(|e| err(dir, format!("fsync of the directory: {e}"))),
        // Some platforms cannot open directories; nothing to sync there.
        Err(_) if !dir.is_dir() => Err(err(dir, "not a directory")),
        Err(_) => Ok(()),
    }
}

/// Writes `bytes` to `path` atomically: into `.<name>.tmp` beside it, fsynced, renamed over
/// `path`, then the directory fsynced. A failure leaves the previous `path` (if any) untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| err(path, "no file name"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(path, format!("writing {}: {e}", tmp.display())));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(
            path,
            format!("renaming {} into place: {e}", tmp.display()),
        ));
    }
    fsync_dir(dir)
}

/// Whether a directory entry is a checkpoint file to hash: a regular file, not `meta` and not a
/// dot-file (temporaries).
fn is_payload(name: &str, meta: &str) -> bool {
    name != meta && !name.starts_with('.')
}

/// fsyncs and hashes every file of `dir` except `meta` (the file that will hold the result) and
/// dot-files: file name → sha256 hex.
pub fn seal(dir: &Path, meta: &str) -> Result<BTreeMap<String, String>> {
    let delay = test_delay();
    let mut files = BTreeMap::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, e.to_string()))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| err(dir, e.to_string()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ty = e.file_type().map_err(|x| err(&e.path(), x.to_string()))?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            return Err(err(&e.path(), "file name is not UTF-8"));
        };
        if !ty.is_file() || !is_payload(&name, meta) {
            continue;
        }
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let p = e.path();
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|x| err(&p, format!("fsync: {x}")))?;
        files.insert(name, sha256_file(&p)?);
    }
    if let Some(d) = delay {
        std::thread::sleep(d);
    }
    Ok(files)
}

/// Checks every file in `files` (name → sha256 hex, as [`seal`] made it) against `dir`.
pub fn verify(dir: &Path, files: &BTreeMap<String, String>) -> Result<()> {
    for (name, want) in files {
        if name.contains('/') || name.contains('\\') || name == ".." {
            return Err(err(
                dir,
                format!("meta.json names the file `{name}`, which is not in the directory"),
            ));
        }
        let p = dir.join(name);
        if !p.is_file() {
            return Err(err(
                &p,
                "missing: meta.json records it, but it is not there (incomplete or damaged \
                 checkpoint)",
            ));
        }
        let got = sha256_file(&p)?;
        if &got != want {
            return Err(err(
                &p,
                format!(
                    "corrupt: its sha256 is {got}, but meta.json records {want} (the file \
                     changed after the checkpoint was written)"
                ),
            ));
        }
    }
    Ok(())
}
