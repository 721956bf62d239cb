//! Documents tokenised once and cached on disk.
//!
//! A corpus split is tokenised with BOS prepended once per document and stored at
//! `<cache_dir>/tokens/<key>.bin`, with a JSON sidecar `<key>.json` describing it. The key is
//! the sha256 of: the cache format and parser versions, the corpus spec and split, the
//! tokenizer's [`fingerprint`](Tokenize::fingerprint) (for Gemma: sha256 of `tokenizer.json`)
//! and, for every source file, its name, length and sha256. Changing any of them changes the
//! key, so a stale cache is never read; old files are left for the user to delete.
//!
//! `.bin` layout (little-endian): `b"HIPPOTOK"`, `u32` format version, `u32` key length, key,
//! `u64` document count, then per document `u32` id length, id, `u64` words, `u64` bytes,
//! `u64` token count, tokens as `u32`; finally the sha256 of everything before it. Loading
//! checks magic, version, key and digest; a file that fails is rebuilt (with a warning).
//! Files are written to a temporary name in the same directory, fsynced and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::corpus::{CorpusSpec, Document, SourceFile, Split};
use super::error::{DataError, Result};
use super::stats::TextStats;
use super::tokenize::Tokenize;

/// Version of the `.bin` layout.
pub const CACHE_FORMAT_VERSION: u32 = 1;
/// Version of corpus parsing; bump when a parser change alters documents or their text.
pub const PARSER_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"HIPPOTOK";

/// One tokenised document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedDoc {
    /// The document's id.
    pub id: String,
    /// Token ids, BOS first.
    pub tokens: Vec<u32>,
    /// Words and bytes of the tokenised text.
    pub stats: TextStats,
}

/// The tokenised documents of one corpus split.
#[derive(Debug, Clone)]
pub struct TokenizedCorpus {
    /// Cache key (hex sha256); empty for a corpus built without the cache.
    pub key: String,
    /// The corpus spec, as a string.
    pub spec: String,
    /// The split.
    pub split: Split,
    /// Documents in corpus order.
    pub docs: Vec<TokenizedDoc>,
    from_cache: bool,
}

/// Describes a cache file (the `.json` sidecar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMeta {
    /// `.bin` format version.
    pub format: u32,
    /// Parser version.
    pub parser: u32,
    /// Cache key.
    pub key: String,
    /// Corpus spec.
    pub spec: String,
    /// Split.
    pub split: Split,
    /// Tokenizer fingerprint.
    pub tokenizer: String,
    /// Source files: name, length, sha256.
    pub sources: Vec<SourceDigest>,
    /// Number of documents.
    pub documents: usize,
    /// Number of tokens (BOS included).
    pub tokens: u64,
    /// Words and bytes of all documents.
    pub stats: TextStats,
}

/// Name, length and sha256 of a source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDigest {
    /// File name (without directory, so that moving the asset cache keeps the key).
    pub name: String,
    /// Length in bytes.
    pub bytes: u64,
    /// Hex sha256 of the contents.
    pub sha256: String,
}

impl TokenizedCorpus {
    /// Tokenises `docs` without touching any cache.
    pub fn build<T: Tokenize + ?Sized>(
        docs: &[Document],
        tokenizer: &T,
        spec: &str,
        split: Split,
    ) -> Result<Self> {
        let docs = docs
            .iter()
            .map(|d| {
                let tokens = tokenizer.encode(&d.text).map_err(|e| match e {
                    DataError::Tokenize { message, .. } => DataError::Tokenize {
                        id: d.id.clone(),
                        message,
                    },
                    other => other,
                })?;
                Ok(TokenizedDoc {
                    id: d.id.clone(),
                    tokens,
                    stats: TextStats::of(&d.text),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            key: String::new(),
            spec: spec.to_owned(),
            split,
            docs,
            from_cache: false,
        })
    }

    /// The `split` of corpus `spec`, read from `<cache_dir>/tokens/<key>.bin` when present and
    /// valid, else loaded, tokenised and written there. `home` is the asset cache directory.
    pub fn load_or_build<T: Tokenize + ?Sized>(
        spec: &CorpusSpec,
        split: Split,
        home: &Path,
        tokenizer: &T,
        cache_dir: &Path,
    ) -> Result<Self> {
        let sources = spec.read_sources(split, home)?;
        let fingerprint = tokenizer.fingerprint()?;
        let digests = digests(&sources);
        let key = cache_key(&spec.to_string(), split, &fingerprint, &digests);
        let (bin, json) = cache_paths(cache_dir, &key);
        if bin.is_file() {
            match read_bin(&bin, &key) {
                Ok(docs) => {
                    tracing::info!(
                        corpus = %spec, %split, documents = docs.len(),
                        path = %bin.display(), "token cache hit"
                    );
                    return Ok(Self {
                        key,
                        spec: spec.to_string(),
                        split,
                        docs,
                        from_cache: true,
                    });
                }
                Err(e) => tracing::warn!("{e}; rebuilding it"),
            }
        }
        let t0 = Instant::now();
        let docs = spec.parse_sources(split, &sources, home)?;
        let mut corpus = Self::build(&docs, tokenizer, &spec.to_string(), split)?;
        corpus.key = key.clone();
        let meta = CacheMeta {
            format: CACHE_FORMAT_VERSION,
            parser: PARSER_VERSION,
            key,
            spec: spec.to_string(),
            split,
            tokenizer: fingerprint,
            sources: digests,
            documents: corpus.len(),
            tokens: corpus.total_tokens(),
            stats: corpus.total_stats(),
        };
        let dir = cache_dir.join("tokens");
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        write_atomic(&bin, &encode_bin(&meta.key, &corpus.docs))?;
        let sidecar = serde_json::to_vec_pretty(&meta).map_err(|e| DataError::BadCache {
            path: json.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&json, &sidecar)?;
        tracing::info!(
            corpus = %spec, %split, documents = corpus.len(), tokens = meta.tokens,
            seconds = t0.elapsed().as_secs_f64(), path = %bin.display(),
            "tokenised corpus and wrote token cache"
        );
        Ok(corpus)
    }

    /// Whether the documents came from the on-disk cache (no tokenisation ran).
    pub fn loaded_from_cache(&self) -> bool {
        self.from_cache
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there is no document.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Tokens of all documents (BOS included).
    pub fn total_tokens(&self) -> u64 {
        self.docs.iter().map(|d| d.tokens.len() as u64).sum()
    }

    /// Words and bytes of all documents.
    pub fn total_stats(&self) -> TextStats {
        self.docs.iter().map(|d| d.stats).sum()
    }

    /// Checks that every token id is below `vocab_size` (the first one that is not is the
    /// error [`DataError::OutOfVocabulary`]).
    pub fn check_vocabulary(&self, vocab_size: usize) -> Result<()> {
        for d in &self.docs {
            if let Some(&id) = d.tokens.iter().find(|&&t| t as usize >= vocab_size) {
                return Err(DataError::OutOfVocabulary {
                    id,
                    doc: d.id.clone(),
                    vocab_size,
                });
            }
        }
        Ok(())
    }
}

/// `(<cache_dir>/tokens/<key>.bin, <cache_dir>/tokens/<key>.json)`.
pub fn cache_paths(cache_dir: &Path, key: &str) -> (PathBuf, PathBuf) {
    let dir = cache_dir.join("tokens");
    (
        dir.join(format!("{key}.bin")),
        dir.join(format!("{key}.json")),
    )
}

/// Name, length and sha256 of each source file.
pub fn digests(sources: &[SourceFile]) -> Vec<SourceDigest> {
    sources
        .iter()
        .map(|s| SourceDigest {
            name: s
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes: s.bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&s.bytes)),
        })
        .collect()
}

/// The cache key (hex sha256) of a corpus split tokenised by the tokenizer `fingerprint`.
pub fn cache_key(spec: &str, split: Split, fingerprint: &str, sources: &[SourceDigest]) -> String {
    let mut h = Sha256::new();
    h.update(format!("hippo-train token cache v{CACHE_FORMAT_VERSION}\n"));
    h.update(format!("parser v{PARSER_VERSION}\n"));
    h.update(format!(
        "spec {spec}\nsplit {split}\ntokenizer {fingerprint}\n"
    ));
    for s in sources {
        h.update(format!("source {} {} {}\n", s.name, s.bytes, s.sha256));
    }
    hex::encode(h.finalize())
}

fn encode_bin(key: &str, docs: &[TokenizedDoc]) -> Vec<u8> {
    let tokens: usize = docs.iter().map(|d| d.tokens.len()).sum();
    let mut out = Vec::with_capacity(64 + key.len() + docs.len() * 64 + tokens * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&CACHE_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(docs.len() as u64).to_le_bytes());
    for d in docs {
        out.extend_from_slice(&(d.id.len() as u32).to_le_bytes());
        out.extend_from_slice(d.id.as_bytes());
        out.extend_from_slice(&d.stats.words.to_le_bytes());
        out.extend_from_slice(&d.stats.bytes.to_le_bytes());
        out.extend_from_slice(&(d.tokens.len() as u64).to_le_bytes());
        for t in &d.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "truncated: needed {n} bytes at offset {}, file body has {}",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn len(&mut self, wide: bool) -> std::result::Result<usize, String> {
        let n = if wide {
            self.u64()?
        } else {
            u64::from(self.u32()?)
        };
        usize::try_from(n).map_err(|_| format!("length {n} does not fit in memory"))
    }
}

fn read_bin(path: &Path, key: &str) -> Result<Vec<TokenizedDoc>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_bin(&bytes, key).map_err(|message| DataError::BadCache {
        path: path.to_path_buf(),
        message,
    })
}

fn decode_bin(bytes: &[u8], key: &str) -> std::result::Result<Vec<TokenizedDoc>, String> {
    if bytes.len() < MAGIC.len() + 32 {
        return Err(format!(
            "{} bytes is too short for a token cache",
            bytes.len()
        ));
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err("sha256 of the contents does not match the stored digest".into());
    }
    let mut r = Reader { buf: body, pos: 0 };
    let magic = r.take(MAGIC.len())?;
    if magic != MAGIC {
        return Err(format!("expected magic {MAGIC:?}, found {magic:?}"));
    }
    let version = r.u32()?;
    if version != CACHE_FORMAT_VERSION {
        return Err(format!(
            "expected format version {CACHE_FORMAT_VERSION}, found {version}"
        ));
    }
    let n = r.len(false)?;
    let found = String::from_utf8_lossy(r.take(n)?).into_owned();
    if found != key {
        return Err(format!("expected key {key}, found {found}"));
    }
    let count = r.len(true)?;
    let mut docs = Vec::with_capacity(count.min(body.len() / 28));
    for _ in 0..count {
        let n = r.len(false)?;
        let id = String::from_utf8(r.take(n)?.to_vec()).map_err(|e| e.to_string())?;
        let words = r.u64()?;
        let bytes = r.u64()?;
        let n = r.len(true)?;
        let raw = r.take(n.checked_mul(4).ok_or("token count overflows")?)?;
        let tokens = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        docs.push(TokenizedDoc {
            id,
            tokens,
            stats: TextStats { words, bytes },
        });
    }
    if r.pos != body.len() {
        return Err(format!(
            "{} trailing bytes after the last document",
            body.len() - r.pos
        ));
    }
    Ok(docs)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(DataError::io(path, e));
    }
    Ok(())
}
