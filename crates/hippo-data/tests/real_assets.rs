//! The real corpora and Gemma tokenizer from `cargo xtask assets`.
//!
//! These tests FAIL (they do not skip) when the assets are missing: run `cargo xtask assets`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hippo_data::cache::cache_paths;
use hippo_data::{
    BatcherConfig, CorpusSpec, Split, StreamBatcher, TokenizedCorpus, default_home, load_corpus,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn home() -> Result<PathBuf, String> {
    let home = default_home().map_err(|e| e.to_string())?;
    let need = [
        home.join("corpora/wiki.utf8"),
        home.join("corpora/sotu"),
        home.join("gemma-3-270m/tokenizer.json"),
    ];
    for p in &need {
        if !p.exists() {
            return Err(format!(
                "real asset {} is missing: run `cargo xtask assets` first",
                p.display()
            ));
        }
    }
    Ok(home)
}

#[test]
fn real_assets_corpora_split_counts() -> TestResult {
    let home = home()?;
    for (spec, counts) in [
        (CorpusSpec::WikiSample, [982, 53, 60]),
        (CorpusSpec::Sotu, [209, 13, 11]),
    ] {
        for (split, want) in Split::ALL.into_iter().zip(counts) {
            let docs = load_corpus(&spec, split, &home)?;
            assert_eq!(docs.len(), want, "{spec} {split}");
            assert!(docs.iter().all(|d| !d.text.trim().is_empty()));
        }
    }
    // The first article, title line stripped.
    let train = load_corpus(&CorpusSpec::WikiSample, Split::Train, &home)?;
    let first = train
        .iter()
        .find(|d| d.id == "8721554")
        .ok_or("article 8721554")?;
    assert_eq!(first.title, "2007 European Parliament election in Romania");
    assert!(
        first.text.starts_with("Romania elected its members"),
        "{}",
        first.text
    );
    Ok(())
}

#[test]
fn real_assets_gemma_tokenisation_cache_and_batches() -> TestResult {
    let home = home()?;
    let tok = hippo_gemma::GemmaTokenizer::from_file(&home.join("gemma-3-270m/tokenizer.json"))?;
    let bos = tok.bos_id();
    let cache = tempfile::tempdir()?;
    for spec in [CorpusSpec::WikiSample, CorpusSpec::Sotu] {
        for split in Split::ALL {
            let t0 = Instant::now();
            let c = TokenizedCorpus::load_or_build(&spec, split, &home, &tok, cache.path())?;
            let built = t0.elapsed();
            assert!(!c.loaded_from_cache());
            let (bin, _) = cache_paths(cache.path(), &c.key);
            let size = std::fs::metadata(&bin)?.len();
            let t1 = Instant::now();
            let again = TokenizedCorpus::load_or_build(&spec, split, &home, &tok, cache.path())?;
            assert!(again.loaded_from_cache());
            assert_eq!(again.docs, c.docs);
            let stats = c.total_stats();
            eprintln!(
                "{spec} {split}: {} docs, {} tokens, {} words, {} bytes; tokenised in {:.2}s, \
                 cache {} bytes, cache hit in {:.3}s",
                c.len(),
                c.total_tokens(),
                stats.words,
                stats.bytes,
                built.as_secs_f64(),
                size,
                t1.elapsed().as_secs_f64()
            );
            for d in &c.docs {
                assert_eq!(d.tokens.first(), Some(&bos), "{}", d.id);
                assert_eq!(
                    d.tokens.iter().filter(|&&t| t == bos).count(),
                    1,
                    "{}",
                    d.id
                );
            }
            let batcher = StreamBatcher::new(Arc::new(c), BatcherConfig::new(512, 4))?;
            eprintln!(
                "  L=512 B=4: {} documents streamed, {} skipped (< 513 tokens)",
                batcher.num_eligible(),
                batcher.skipped()
            );
            let n = batcher.count();
            assert!(n > 0);
        }
    }
    Ok(())
}
