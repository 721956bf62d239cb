//! The token cache: hits skip tokenisation, changes invalidate, corruption rebuilds.

use std::cell::Cell;
use std::fs;
use std::path::Path;

use hippo_data::cache::{CacheMeta, cache_paths};
use hippo_data::{
    ByteTokenizer, CorpusSpec, Split, TextStats, Tokenize, TokenizedCorpus, load_corpus,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A byte tokenizer that counts `encode` calls.
struct Counting {
    calls: Cell<usize>,
    fingerprint: String,
}

impl Counting {
    fn new(fingerprint: &str) -> Self {
        Self {
            calls: Cell::new(0),
            fingerprint: fingerprint.to_owned(),
        }
    }
}

impl Tokenize for Counting {
    fn encode(&self, text: &str) -> hippo_data::Result<Vec<u32>> {
        self.calls.set(self.calls.get() + 1);
        ByteTokenizer.encode(text)
    }

    fn fingerprint(&self) -> hippo_data::Result<String> {
        Ok(self.fingerprint.clone())
    }
}

fn corpus_dir(root: &Path) -> std::io::Result<CorpusSpec> {
    let dir = root.join("docs");
    fs::create_dir_all(&dir)?;
    for i in 0..30 {
        fs::write(
            dir.join(format!("doc-{i}.txt")),
            format!("Document {i}: héllo wörld {}", "x ".repeat(i)),
        )?;
    }
    Ok(CorpusSpec::TxtDir(dir))
}

#[test]
fn second_load_hits_the_cache_without_tokenising() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let spec = corpus_dir(tmp.path())?;
    let cache = tmp.path().join("cache");
    let home = tmp.path().join("home");
    let tok = Counting::new("t1");

    let first = TokenizedCorpus::load_or_build(&spec, Split::Train, &home, &tok, &cache)?;
    assert!(!first.loaded_from_cache());
    assert_eq!(tok.calls.get(), first.len());
    let (bin, json) = cache_paths(&cache, &first.key);
    assert!(bin.is_file() && json.is_file());
    let meta: CacheMeta = serde_json::from_slice(&fs::read(&json)?)?;
    assert_eq!(meta.key, first.key);
    assert_eq!(meta.documents, first.len());
    assert_eq!(meta.tokens, first.total_tokens());
    assert_eq!(meta.tokenizer, "t1");
    assert_eq!(
        meta.sources.len(),
        30,
        "every file of an unsplit corpus is keyed"
    );

    let second = TokenizedCorpus::load_or_build(&spec, Split::Train, &home, &tok, &cache)?;
    assert!(second.loaded_from_cache());
    assert_eq!(
        tok.calls.get(),
        first.len(),
        "a cache hit does not tokenise"
    );
    assert_eq!(second.key, first.key);
    assert_eq!(second.docs, first.docs);

    // Contents: BOS once, then the text's bytes; stats of the exact text.
    let docs = load_corpus(&spec, Split::Train, &home)?;
    assert_eq!(docs.len(), second.len());
    for (d, t) in docs.iter().zip(&second.docs) {
        assert_eq!(t.id, d.id);
        assert_eq!(t.tokens[0], ByteTokenizer::BOS);
        assert_eq!(
            t.tokens
                .iter()
                .filter(|&&x| x == ByteTokenizer::BOS)
                .count(),
            1
        );
        assert_eq!(t.tokens.len(), d.text.len() + 1);
        assert_eq!(t.stats, TextStats::of(&d.text));
    }
    // The other splits have their own keys.
    let valid = TokenizedCorpus::load_or_build(&spec, Split::Valid, &home, &tok, &cache)?;
    assert_ne!(valid.key, first.key);
    assert!(!valid.loaded_from_cache());
    Ok(())
}

#[test]
fn corpus_or_tokenizer_change_invalidates_the_cache() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let spec = corpus_dir(tmp.path())?;
    let cache = tmp.path().join("cache");
    let home = tmp.path().join("home");
    let tok = Counting::new("t1");
    let a = TokenizedCorpus::load_or_build(&spec, Split::Train, &home, &tok, &cache)?;

    // Any file of the corpus changes (even one of another split): a new key, tokenised anew.
    let CorpusSpec::TxtDir(dir) = &spec else {
        return Err("txt-dir".into());
    };
    fs::write(dir.join("doc-16.txt"), "changed")?;
    let calls = tok.calls.get();
    let b = TokenizedCorpus::load_or_build(&spec, Split::Train, &home, &tok, &cache)?;
    assert_ne!(a.key, b.key);
    assert!(!b.loaded_from_cache());
    assert_eq!(tok.calls.get(), calls + b.len());

    // Another tokenizer: a new key.
    let tok2 = Counting::new("t2");
    let c = TokenizedCorpus::load_or_build(&spec, Split::Train, &home, &tok2, &cache)?;
    assert_ne!(c.key, b.key);
    assert!(!c.loaded_from_cache());
    assert_eq!(tok2.calls.get(), c.len());
    Ok(())
}

#[test]
fn a_corrupt_cache_file_is_rebuilt() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let spec = corpus_dir(tmp.path())?;
    let cache = tmp.path().join("cache");
    let home = tmp.path().join("home");
    let tok = Counting::new("t1");
    let a = TokenizedCorpus::load_or_build(&spec, Split::Train, &home, &tok, &cache)?;
    let (bin, _) = cache_paths(&cache, &a.key);
    let mut bytes = fs::read(&bin)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&bin, &bytes)?;
    let b = TokenizedCorpus::load_or_build(&spec, Split::Train, &home, &tok, &cache)?;
    assert!(!b.loaded_from_cache(), "a corrupt file is not trusted");
    assert_eq!(b.docs, a.docs);
    // Truncated file too.
    fs::write(&bin, &bytes[..10])?;
    let c = TokenizedCorpus::load_or_build(&spec, Split::Train, &home, &tok, &cache)?;
    assert!(!c.loaded_from_cache());
    let d = TokenizedCorpus::load_or_build(&spec, Split::Train, &home, &tok, &cache)?;
    assert!(d.loaded_from_cache(), "the rebuilt file is valid");
    // No temporary files left behind.
    let leftovers: Vec<_> = fs::read_dir(cache.join("tokens"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    Ok(())
}

#[test]
fn check_vocabulary_names_the_first_id_outside_it() -> TestResult {
    let doc = |id: &str, text: &str| hippo_data::Document {
        id: id.into(),
        title: id.into(),
        text: text.into(),
        source: "test".into(),
        url: None,
    };
    let c = TokenizedCorpus::build(
        &[doc("a", "abc"), doc("b", "x\u{e9}")],
        &ByteTokenizer,
        "t",
        Split::Test,
    )?;
    // Byte ids: BOS = 256, 'x' = 120, 'é' = 0xC3 0xA9 = 195, 169.
    c.check_vocabulary(257)?;
    let mut no_bos = c.clone();
    for d in &mut no_bos.docs {
        d.tokens.remove(0);
    }
    no_bos.check_vocabulary(196)?;
    match no_bos.check_vocabulary(195) {
        Err(hippo_data::DataError::OutOfVocabulary {
            id,
            doc,
            vocab_size,
        }) => {
            assert_eq!((id, doc.as_str(), vocab_size), (195, "b", 195));
        }
        other => panic!("expected OutOfVocabulary, got {other:?}"),
    }
    match c.check_vocabulary(256) {
        Err(hippo_data::DataError::OutOfVocabulary {
            id,
            doc,
            vocab_size,
        }) => {
            assert_eq!((id, doc.as_str(), vocab_size), (256, "a", 256));
        }
        other => panic!("expected OutOfVocabulary, got {other:?}"),
    }
    let e = c
        .check_vocabulary(196)
        .err()
        .ok_or("vocabulary of 196 accepted")?
        .to_string();
    assert!(
        e.contains("token id 256 of document `a`") && e.contains("vocabulary of 196"),
        "{e}"
    );
    Ok(())
}
