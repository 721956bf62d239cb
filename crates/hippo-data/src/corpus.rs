//! Corpora as lists of [`Document`]s, and the deterministic train/valid/test split.
//!
//! Sources ([`CorpusSpec`]):
//!
//! * `wiki-sample` (default): `<home>/corpora/wiki.utf8`, Wikipedia articles in WikiExtractor
//!   `<doc id=".." url=".." title="..">` … `</doc>` wrappers (see [`parse_doc_wrapped`]).
//! * `sotu`: `<home>/corpora/sotu/*.txt`, one State of the Union address per file.
//! * `txt-dir:<path>`: every `*.txt` file directly in `<path>`, sorted by name, one document each.
//! * `wikitext-raw:<dir>`: the WikiText raw release (`wiki.train.raw`, `wiki.valid.raw`,
//!   `wiki.test.raw`), cut into articles at top-level headings (see [`split_wikitext`]).
//! * `wikitext-hf:<dir>`: a local copy of the Hugging Face `wikitext` dataset:
//!   `<dir>/wikitext-2-raw-v1/{train,validation,test}-*.parquet` (or those files directly in
//!   `<dir>`), whose `text` column holds the raw file line by line; read and cut as above.
//!
//! Every document's `text` has trailing whitespace removed; otherwise it is the source text
//! verbatim. Whitespace-only documents (e.g. the redirect stubs of the Wikipedia sample) are
//! dropped. `<home>` is the asset cache ([`default_home`]), filled by `cargo xtask assets`.
//!
//! # Split rule
//!
//! Sources without their own split (`wiki-sample`, `sotu`, `txt-dir`) are split by document:
//! the document id's bytes are hashed with 64-bit FNV-1a ([`fnv1a64`]), `bucket = hash % 100`,
//! and buckets `[0, 90)` are train, `[90, 95)` valid, `[95, 100)` test ([`split_of_id`]). The
//! assignment depends on the id alone, so it is stable across runs, machines and corpus
//! versions. WikiText's files decide its split.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::{ASSETS_HINT, DataError, Result};

/// One document of a corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Stable identifier: the `<doc id>` attribute, a file stem, or `<file>#<n>` for WikiText.
    pub id: String,
    /// Title (`<doc title>` with entities decoded, the file stem, or the WikiText heading).
    pub title: String,
    /// The text that is tokenised.
    pub text: String,
    /// The file the document was read from.
    pub source: String,
    /// The `<doc url>` attribute, where the source gives one.
    pub url: Option<String>,
}

/// A split of a corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Split {
    /// Training documents (hash buckets `[0, 90)`).
    Train,
    /// Validation documents (hash buckets `[90, 95)`).
    Valid,
    /// Test documents (hash buckets `[95, 100)`).
    Test,
    /// Every document, for a corpus without its own split (e.g. a user's `txt-dir:` of
    /// documents to evaluate on); a corpus with its own split (WikiText) refuses it.
    All,
}

impl Split {
    /// The three disjoint splits, in order ([`Split::All`] is their union).
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// `train`, `valid` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
            Split::All => "all",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "valid" | "validation" | "val" => Ok(Split::Valid),
            "test" => Ok(Split::Test),
            "all" => Ok(Split::All),
            _ => Err(DataError::UnknownSplit { name: s.to_owned() }),
        }
    }
}

/// 64-bit FNV-1a of `bytes` (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The split bucket of a document id: `fnv1a64(id) % 100`.
pub fn split_bucket(id: &str) -> u8 {
    // The remainder is below 100, so the cast is lossless.
    (fnv1a64(id.as_bytes()) % 100) as u8
}

/// The split of a document id for sources without their own split: buckets `[0, 90)` train,
/// `[90, 95)` valid, `[95, 100)` test.
pub fn split_of_id(id: &str) -> Split {
    match split_bucket(id) {
        0..90 => Split::Train,
        90..95 => Split::Valid,
        _ => Split::Test,
    }
}

/// Which corpus to read, parsed from a CLI string (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CorpusSpec {
    /// `wiki-sample`: `<home>/corpora/wiki.utf8`.
    #[default]
    WikiSample,
    /// `sotu`: `<home>/corpora/sotu/*.txt`.
    Sotu,
    /// `txt-dir:<path>`: every `.txt` file in a directory.
    TxtDir(PathBuf),
    /// `wikitext-raw:<dir>`: `wiki.{train,valid,test}.raw`.
    WikitextRaw(PathBuf),
    /// `wikitext-hf:<dir>`: `[wikitext-2-raw-v1/]{train,validation,test}-*.parquet`.
    WikitextHf(PathBuf),
}

impl FromStr for CorpusSpec {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        match t {
            "wiki-sample" | "wiki" => return Ok(CorpusSpec::WikiSample),
            "sotu" => return Ok(CorpusSpec::Sotu),
            _ => {}
        }
        let Some((kind, path)) = t.split_once(':') else {
            return Err(DataError::UnknownCorpus { spec: s.to_owned() });
        };
        let make: fn(PathBuf) -> CorpusSpec = match kind {
            "txt-dir" => CorpusSpec::TxtDir,
            "wikitext-raw" => CorpusSpec::WikitextRaw,
            "wikitext-hf" => CorpusSpec::WikitextHf,
            _ => return Err(DataError::UnknownCorpus { spec: s.to_owned() }),
        };
        if path.is_empty() {
            return Err(DataError::MissingSpecPath {
                spec: s.to_owned(),
                kind: kind.to_owned(),
            });
        }
        Ok(make(PathBuf::from(path)))
    }
}

impl fmt::Display for CorpusSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorpusSpec::WikiSample => f.write_str("wiki-sample"),
            CorpusSpec::Sotu => f.write_str("sotu"),
            CorpusSpec::TxtDir(p) => write!(f, "txt-dir:{}", p.display()),
            CorpusSpec::WikitextRaw(p) => write!(f, "wikitext-raw:{}", p.display()),
            CorpusSpec::WikitextHf(p) => write!(f, "wikitext-hf:{}", p.display()),
        }
    }
}

/// A source file's path and bytes, read once so that hashing and parsing see the same bytes.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its contents.
    pub bytes: Vec<u8>,
}

impl CorpusSpec {
    /// Whether the source brings its own train/valid/test split (WikiText) rather than
    /// being split by [`split_of_id`].
    pub fn has_own_split(&self) -> bool {
        matches!(self, CorpusSpec::WikitextRaw(_) | CorpusSpec::WikitextHf(_))
    }

    /// The file or directory this corpus is read from.
    pub fn root(&self, home: &Path) -> PathBuf {
        match self {
            CorpusSpec::WikiSample => home.join("corpora").join("wiki.utf8"),
            CorpusSpec::Sotu => home.join("corpora").join("sotu"),
            CorpusSpec::TxtDir(p) | CorpusSpec::WikitextRaw(p) | CorpusSpec::WikitextHf(p) => {
                p.clone()
            }
        }
    }

    fn hint(&self) -> String {
        match self {
            CorpusSpec::WikiSample | CorpusSpec::Sotu => ASSETS_HINT.to_owned(),
            CorpusSpec::TxtDir(_) => "pass `txt-dir:<path>` naming a directory of .txt files, \
                                      one document per file"
                .to_owned(),
            CorpusSpec::WikitextRaw(_) => {
                "expected the WikiText raw release layout: wiki.train.raw, wiki.valid.raw, \
                 wiki.test.raw in one directory"
                    .to_owned()
            }
            CorpusSpec::WikitextHf(_) => {
                "expected a local copy of the Hugging Face `wikitext` dataset: \
                 <dir>/wikitext-2-raw-v1/{train,validation,test}-*.parquet; or export the \
                 splits to wiki.{train,valid,test}.raw text and use `wikitext-raw:<dir>`"
                    .to_owned()
            }
        }
    }

    fn missing(&self, what: &str, path: PathBuf) -> DataError {
        DataError::Missing {
            what: what.to_owned(),
            path,
            hint: self.hint(),
        }
    }

    /// The files whose bytes make up `split` of this corpus (for sources without their own
    /// split: every file of the corpus), sorted.
    pub fn source_paths(&self, split: Split, home: &Path) -> Result<Vec<PathBuf>> {
        let root = self.root(home);
        match self {
            CorpusSpec::WikiSample => {
                if !root.is_file() {
                    return Err(self.missing("Wikipedia sample (wiki.utf8)", root));
                }
                Ok(vec![root])
            }
            CorpusSpec::Sotu | CorpusSpec::TxtDir(_) => {
                if !root.is_dir() {
                    return Err(self.missing("directory of .txt documents", root));
                }
                let files = list_files(&root, |name| name.ends_with(".txt"))?;
                if files.is_empty() {
                    return Err(DataError::EmptyCorpus {
                        spec: self.to_string(),
                        path: root,
                        hint: format!("the directory holds no .txt file; {}", self.hint()),
                    });
                }
                Ok(files)
            }
            CorpusSpec::WikitextRaw(_) | CorpusSpec::WikitextHf(_) if split == Split::All => {
                Err(DataError::BadConfig(format!(
                    "`{self}` brings its own train/valid/test split; --split all is for corpora \
                     without one (wiki-sample, sotu, txt-dir:)"
                )))
            }
            CorpusSpec::WikitextRaw(_) => {
                let file = root.join(format!("wiki.{}.raw", split.name()));
                if !file.is_file() {
                    return Err(self.missing(&format!("WikiText {split} split"), file));
                }
                Ok(vec![file])
            }
            CorpusSpec::WikitextHf(_) => {
                if !root.is_dir() {
                    return Err(self.missing("Hugging Face wikitext directory", root));
                }
                let nested = root.join("wikitext-2-raw-v1");
                let dir = if nested.is_dir() { nested } else { root };
                let prefix = match split {
                    Split::Train => "train-",
                    Split::Valid => "validation-",
                    Split::Test | Split::All => "test-",
                };
                let files = list_files(&dir, |n| n.starts_with(prefix) && n.ends_with(".parquet"))?;
                if files.is_empty() {
                    return Err(self.missing(
                        &format!("Parquet files {prefix}*.parquet of the {split} split"),
                        dir,
                    ));
                }
                Ok(files)
            }
        }
    }

    /// Reads [`CorpusSpec::source_paths`].
    pub fn read_sources(&self, split: Split, home: &Path) -> Result<Vec<SourceFile>> {
        self.source_paths(split, home)?
            .into_iter()
            .map(|path| {
                let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
                Ok(SourceFile { path, bytes })
            })
            .collect()
    }

    /// Parses already-read sources into the documents of `split`.
    pub fn parse_sources(
        &self,
        split: Split,
        sources: &[SourceFile],
        home: &Path,
    ) -> Result<Vec<Document>> {
        let mut docs = Vec::new();
        for src in sources {
            match self {
                CorpusSpec::WikiSample => {
                    docs.extend(parse_doc_wrapped(utf8(src)?, &src.path)?);
                }
                CorpusSpec::Sotu | CorpusSpec::TxtDir(_) => {
                    let id = src
                        .path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    docs.push(Document {
                        title: id.clone(),
                        id,
                        text: clean_text(utf8(src)?).to_owned(),
                        source: src.path.display().to_string(),
                        url: None,
                    });
                }
                CorpusSpec::WikitextRaw(_) => {
                    docs.extend(split_wikitext(utf8(src)?, &src.path));
                }
                CorpusSpec::WikitextHf(_) => {
                    let text = super::parquet::read_text_column(&src.path, &src.bytes)?;
                    docs.extend(split_wikitext(&text, &src.path));
                }
            }
        }
        let before = docs.len();
        docs.retain(|d| !d.text.trim().is_empty());
        if before != docs.len() {
            tracing::debug!(
                corpus = %self,
                dropped = before - docs.len(),
                "dropped whitespace-only documents"
            );
        }
        if docs.is_empty() {
            return Err(DataError::EmptyCorpus {
                spec: self.to_string(),
                path: self.root(home),
                hint: self.hint(),
            });
        }
        let total = docs.len();
        if !self.has_own_split() && split != Split::All {
            docs.retain(|d| split_of_id(&d.id) == split);
        }
        if docs.is_empty() {
            return Err(DataError::EmptySplit {
                spec: self.to_string(),
                split: split.to_string(),
                total,
            });
        }
        Ok(docs)
    }
}

/// The asset cache directory: `$HIPPO_HOME` if set and non-empty, else
/// `$XDG_CACHE_HOME/hippoformer`, else `$HOME/.cache/hippoformer`; `None` without any of them.
/// The one rule of the whole project (hippo-gemma's default model path and xtask's assets use
/// it too).
pub fn hippo_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HIPPO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("hippoformer"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hippoformer"))
}

/// The asset cache directory ([`hippo_home`]), or [`DataError::NoHome`].
pub fn default_home() -> Result<PathBuf> {
    hippo_home().ok_or(DataError::NoHome)
}

/// Loads the documents of `split` of the corpus `spec`; `home` is the asset cache directory
/// (used by `wiki-sample` and `sotu`).
pub fn load_corpus(spec: &CorpusSpec, split: Split, home: &Path) -> Result<Vec<Document>> {
    let sources = spec.read_sources(split, home)?;
    let docs = spec.parse_sources(split, &sources, home)?;
    tracing::info!(corpus = %spec, %split, documents = docs.len(), "loaded corpus");
    Ok(docs)
}

fn list_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        if keep(&name.to_string_lossy()) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn utf8(src: &SourceFile) -> Result<&str> {
    std::str::from_utf8(&src.bytes).map_err(|e| DataError::NotUtf8 {
        path: src.path.clone(),
        offset: e.valid_up_to(),
    })
}

/// Drops a leading byte-order mark and trailing whitespace.
fn clean_text(s: &str) -> &str {
    s.strip_prefix('\u{feff}').unwrap_or(s).trim_end()
}

/// Parses WikiExtractor output: `<doc id=".." url=".." title="..">` on its own line, the body,
/// `</doc>` on its own line.
///
/// `id` is required; `url` and `title` are optional; attribute values have XML entities
/// (`&amp;`, `&quot;`, `&lt;`, `&gt;`, `&apos;`, `&#N;`, `&#xN;`) decoded. The body's first
/// line is dropped when it repeats the title (raw or decoded), then leading blank lines and
/// trailing whitespace; the rest is kept verbatim (entities in the body are not decoded). Text
/// outside any wrapper is ignored with a warning; nested or unclosed wrappers are errors.
pub fn parse_doc_wrapped(text: &str, path: &Path) -> Result<Vec<Document>> {
    struct Open {
        line: usize,
        id: String,
        raw_title: String,
        title: String,
        url: Option<String>,
        body_start: usize,
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bad = |line: usize, message: String| DataError::BadDoc {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut docs = Vec::new();
    let mut open: Option<Open> = None;
    let mut stray = 0usize;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let start = offset;
        offset += line.len();
        let t = line.trim();
        if t.starts_with("<doc ") || t == "<doc>" {
            if let Some(o) = &open {
                return Err(bad(
                    line_no,
                    format!(
                        "found a new <doc> while the one opened at line {} is not closed",
                        o.line
                    ),
                ));
            }
            let Some(inner) = t.strip_prefix("<doc").and_then(|r| r.strip_suffix('>')) else {
                return Err(bad(
                    line_no,
                    format!("expected `<doc ...>` alone on its line, found `{t}`"),
                ));
            };
            let attrs = parse_attributes(inner).map_err(|m| bad(line_no, m))?;
            let get = |k: &str| attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
            let Some(id) = get("id") else {
                return Err(bad(
                    line_no,
                    "expected an `id` attribute, found none".into(),
                ));
            };
            let raw_title = attrs
                .iter()
                .find(|(a, _)| a == "title")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            open = Some(Open {
                line: line_no,
                id: decode_entities(&id),
                title: decode_entities(&raw_title),
                raw_title,
                url: get("url").map(|u| decode_entities(&u)),
                body_start: offset,
            });
        } else if t == "</doc>" {
            let Some(o) = open.take() else {
                return Err(bad(line_no, "found `</doc>` without an open <doc>".into()));
            };
            let body = &text[o.body_start..start];
            docs.push(Document {
                text: strip_title(body, &o.raw_title, &o.title).to_owned(),
                id: o.id,
                title: o.title,
                source: path.display().to_string(),
                url: o.url,
            });
        } else if open.is_none() && !t.is_empty() {
            stray += 1;
        }
    }
    if let Some(o) = open {
        return Err(bad(
            o.line,
            "the <doc> opened here is never closed (expected `</doc>`, found end of file)".into(),
        ));
    }
    if stray > 0 {
        tracing::warn!(path = %path.display(), lines = stray, "ignored text outside <doc> wrappers");
    }
    Ok(docs)
}

/// Drops a first line equal to the title, then leading blank lines and trailing whitespace.
fn strip_title<'a>(body: &'a str, raw_title: &str, title: &str) -> &'a str {
    let mut rest = body;
    let (first, after) = match rest.split_once('\n') {
        Some((f, a)) => (f, a),
        None => (rest, ""),
    };
    let f = first.trim();
    if !f.is_empty() && (f == raw_title.trim() || f == title.trim()) {
        rest = after;
    }
    loop {
        match rest.split_once('\n') {
            Some((l, a)) if l.trim().is_empty() => rest = a,
            _ => break,
        }
    }
    rest.trim_end()
}

/// `key="value"` pairs (double or single quotes), values raw (entities not decoded).
fn parse_attributes(s: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            return Err(format!("expected `name=\"value\"`, found `{rest}`"));
        };
        let key = rest[..eq].trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!(
                "expected an attribute name before `=`, found `{key}`"
            ));
        }
        let after = rest[eq + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            return Err(format!(
                "expected a quoted value for `{key}`, found `{after}`"
            ));
        };
        let Some(end) = after[1..].find(quote) else {
            return Err(format!("unterminated value of `{key}`"));
        };
        out.push((key.to_owned(), after[1..1 + end].to_owned()));
        rest = after[end + 2..].trim_start();
    }
    Ok(out)
}

/// Decodes the five XML entities and numeric character references; anything else is kept.
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let decoded = tail.find(';').filter(|&e| e <= 10).and_then(|end| {
            let ent = &tail[1..end];
            let c = match ent {
                "amp" => Some('&'),
                "quot" => Some('"'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "apos" => Some('\''),
                _ => {
                    if let Some(hex) = ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X")) {
                        u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
                    } else if let Some(dec) = ent.strip_prefix('#') {
                        dec.parse::<u32>().ok().and_then(char::from_u32)
                    } else {
                        None
                    }
                }
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `line` is a WikiText top-level heading ` = Title = ` (exactly one `=` each side;
/// ` = = Section = = ` is not); returns the title.
pub fn wikitext_heading(line: &str) -> Option<&str> {
    let t = line.trim();
    let inner = t.strip_prefix("= ")?.strip_suffix(" =")?.trim();
    if inner.is_empty() || inner.starts_with('=') || inner.ends_with('=') {
        return None;
    }
    Some(inner)
}

/// Cuts WikiText raw text into articles at top-level headings ([`wikitext_heading`]).
///
/// An article's text runs from its heading line (kept, as in the document-level WikiText used
/// by lm-evaluation-harness) up to the next top-level heading, verbatim except that trailing
/// whitespace is removed. Text before the first heading is dropped when blank, else kept as a
/// document with an empty title. Ids are `<file name>#<n>`, `n` counting from 0 in file order.
pub fn split_wikitext(text: &str, path: &Path) -> Vec<Document> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut docs = Vec::new();
    let mut push = |title: &str, body: &str| {
        let body = body.trim_end();
        if body.trim().is_empty() {
            return;
        }
        docs.push(Document {
            id: format!("{name}#{}", docs.len()),
            title: title.to_owned(),
            text: body.to_owned(),
            source: path.display().to_string(),
            url: None,
        });
    };
    let mut cur_title = String::new();
    let mut cur_start = 0usize;
    let mut offset = 0usize;
    for line in text.split_inclusive('\n') {
        if let Some(title) = wikitext_heading(line) {
            push(&cur_title, &text[cur_start..offset]);
            cur_title = title.to_owned();
            cur_start = offset;
        }
        offset += line.len();
    }
    push(&cur_title, &text[cur_start..]);
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_attributes() {
        assert_eq!(
            decode_entities("a &amp; b &lt;c&gt; &#233;&#xE9; &apos;&quot; &bogus; & x"),
            "a & b <c> éé '\" &bogus; & x"
        );
        let attrs = parse_attributes(r#" id="1"  title='It&apos;s' url = "u" "#);
        assert_eq!(
            attrs,
            Ok(vec![
                ("id".to_owned(), "1".to_owned()),
                ("title".to_owned(), "It&apos;s".to_owned()),
                ("url".to_owned(), "u".to_owned()),
            ])
        );
        assert!(parse_attributes(r#"id="1"#).is_err());
        assert!(parse_attributes("id").is_err());
    }

    #[test]
    fn crlf_bodies_strip_the_title_line() -> Result<()> {
        let text = "<doc id=\"1\" title=\"T\">\r\nT\r\n\r\nBody line.\r\nMore.\r\n</doc>\r\n";
        let docs = parse_doc_wrapped(text, Path::new("c"))?;
        assert_eq!(docs[0].text, "Body line.\r\nMore.");
        Ok(())
    }
}
