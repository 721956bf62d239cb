//! Corpus loading, parsing and splitting on small synthetic corpora.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use hippo_data::corpus::{parse_doc_wrapped, split_wikitext, wikitext_heading};
use hippo_data::{CorpusSpec, DataError, Split, fnv1a64, load_corpus, split_bucket, split_of_id};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WIKI: &str = r#"<doc id="12" url="https://en.wikipedia.org/wiki?curid=12" title="Sooty &amp; Co.">
Sooty &amp; Co.

Sooty &amp; Co. is a show.
Second paragraph.

Third, after a blank line.  

</doc>
<doc id="13" url="https://x.invalid/13" title="Roderick &quot;Roddy&quot; St. James">
Roderick &quot;Roddy&quot; St. James



</doc>
<doc id="14" title="No url">
Not the title
Body.
</doc>
"#;

#[test]
fn doc_wrapper_attributes_title_stripping_and_verbatim_body() -> TestResult {
    let docs = parse_doc_wrapped(WIKI, Path::new("wiki.utf8"))?;
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0].id, "12");
    assert_eq!(docs[0].title, "Sooty & Co.");
    assert_eq!(
        docs[0].url.as_deref(),
        Some("https://en.wikipedia.org/wiki?curid=12")
    );
    // Title line and the blank line after it dropped; body verbatim (entities kept,
    // inner blank line kept); trailing whitespace dropped.
    assert_eq!(
        docs[0].text,
        "Sooty &amp; Co. is a show.\nSecond paragraph.\n\nThird, after a blank line."
    );
    assert_eq!(docs[0].source, "wiki.utf8");
    // A redirect stub: only the title, so the text is empty.
    assert_eq!(docs[1].title, "Roderick \"Roddy\" St. James");
    assert_eq!(docs[1].text, "");
    // A first line that is not the title is kept; url is optional.
    assert_eq!(docs[2].url, None);
    assert_eq!(docs[2].text, "Not the title\nBody.");
    Ok(())
}

#[test]
fn doc_wrapper_errors_name_the_line() {
    let cases = [
        ("<doc id=\"1\" title=\"a\">\nx\n", 1, "never closed"),
        ("<doc id=\"1\">\n<doc id=\"2\">\n</doc>\n", 2, "not closed"),
        ("x\n</doc>\n", 2, "without an open"),
        ("<doc title=\"a\">\n</doc>\n", 1, "`id`"),
        ("<doc id=1>\n</doc>\n", 1, "quoted value"),
    ];
    for (text, line, needle) in cases {
        match parse_doc_wrapped(text, Path::new("c.utf8")) {
            Err(DataError::BadDoc {
                line: l, message, ..
            }) => {
                assert_eq!(l, line, "{text:?}: {message}");
                assert!(message.contains(needle), "{text:?}: {message}");
            }
            other => panic!("{text:?}: expected BadDoc, got {other:?}"),
        }
    }
}

const WIKITEXT: &str = " \n = Alpha = \n \n Alpha is a letter . \n \n = = History = = \n \n It is old . \n \n = = = Early = = = \n Very old . \n \n = Beta = \n \n Beta follows . \n";

#[test]
fn wikitext_splits_at_top_level_headings_only() {
    assert_eq!(wikitext_heading(" = Alpha = \n"), Some("Alpha"));
    assert_eq!(wikitext_heading(" = = History = = \n"), None);
    assert_eq!(wikitext_heading(" = = = Early = = = \n"), None);
    assert_eq!(wikitext_heading(" a = b = c \n"), None);
    assert_eq!(wikitext_heading(" = \n"), None);

    let docs = split_wikitext(WIKITEXT, Path::new("/d/wiki.train.raw"));
    let titles: Vec<&str> = docs.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(titles, ["Alpha", "Beta"]);
    assert_eq!(docs[0].id, "wiki.train.raw#0");
    assert_eq!(docs[1].id, "wiki.train.raw#1");
    assert_eq!(
        docs[0].text,
        " = Alpha = \n \n Alpha is a letter . \n \n = = History = = \n \n It is old . \n \n = = = Early = = = \n Very old ."
    );
    assert_eq!(docs[1].text, " = Beta = \n \n Beta follows .");
}

fn write_wikitext_raw(dir: &Path) -> std::io::Result<()> {
    fs::write(dir.join("wiki.train.raw"), WIKITEXT)?;
    fs::write(dir.join("wiki.valid.raw"), " = Gamma = \n Gamma . \n")?;
    fs::write(
        dir.join("wiki.test.raw"),
        " = Delta = \n Delta . \n = Eps = \n E . \n",
    )
}

#[test]
fn wikitext_raw_files_decide_the_split() -> TestResult {
    let tmp = tempfile::tempdir()?;
    write_wikitext_raw(tmp.path())?;
    let spec: CorpusSpec = format!("wikitext-raw:{}", tmp.path().display()).parse()?;
    let count = |s| load_corpus(&spec, s, Path::new("/nonexistent")).map(|d| d.len());
    assert_eq!(count(Split::Train)?, 2);
    assert_eq!(count(Split::Valid)?, 1);
    assert_eq!(count(Split::Test)?, 2);
    fs::remove_file(tmp.path().join("wiki.test.raw"))?;
    match load_corpus(&spec, Split::Test, Path::new("/nonexistent")) {
        Err(e @ DataError::Missing { .. }) => {
            let m = e.to_string();
            assert!(m.contains("wiki.test.raw") && m.contains("WikiText"), "{m}");
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    Ok(())
}

/// Writes `lines` as a Hugging Face style `text` column (nullable UTF-8, Snappy).
fn write_parquet(path: &Path, lines: &[Option<&str>]) -> TestResult {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;

    let schema = Arc::new(parquet::schema::parser::parse_message_type(
        "message schema { OPTIONAL BYTE_ARRAY text (STRING); }",
    )?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut writer = SerializedFileWriter::new(fs::File::create(path)?, schema, props)?;
    let mut rg = writer.next_row_group()?;
    while let Some(mut col) = rg.next_column()? {
        let values: Vec<ByteArray> = lines
            .iter()
            .flatten()
            .map(|l| ByteArray::from(*l))
            .collect();
        let defs: Vec<i16> = lines.iter().map(|l| i16::from(l.is_some())).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, Some(&defs), None)?;
        col.close()?;
    }
    rg.close()?;
    writer.close()?;
    Ok(())
}

#[test]
fn wikitext_hf_parquet_reads_like_the_raw_file() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let sub = tmp.path().join("wikitext-2-raw-v1");
    fs::create_dir_all(&sub)?;
    let mut lines: Vec<Option<&str>> = WIKITEXT.split_inclusive('\n').map(Some).collect();
    lines.insert(3, None); // a null row reads as an empty line
    write_parquet(&sub.join("train-00000-of-00001.parquet"), &lines)?;
    write_parquet(
        &sub.join("validation-00000-of-00001.parquet"),
        &[Some(" = Gamma = \n"), Some(" Gamma . \n")],
    )?;
    let spec: CorpusSpec = format!("wikitext-hf:{}", tmp.path().display()).parse()?;
    let docs = load_corpus(&spec, Split::Train, Path::new("/nonexistent"))?;
    let raw = split_wikitext(WIKITEXT, Path::new("x"));
    assert_eq!(docs.len(), 2);
    for (d, r) in docs.iter().zip(&raw) {
        assert_eq!((&d.title, &d.text), (&r.title, &r.text));
    }
    assert_eq!(docs[0].id, "train-00000-of-00001.parquet#0");
    assert_eq!(load_corpus(&spec, Split::Valid, Path::new("/x"))?.len(), 1);
    // No test split: a clear error that says how to provide it.
    match load_corpus(&spec, Split::Test, Path::new("/x")) {
        Err(e @ DataError::Missing { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("test-*.parquet") && m.contains("wikitext-raw"),
                "{m}"
            );
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    // Not a Parquet file: error names the file.
    fs::write(sub.join("test-00000-of-00001.parquet"), "not parquet")?;
    match load_corpus(&spec, Split::Test, Path::new("/x")) {
        Err(e @ DataError::Parquet { .. }) => {
            assert!(e.to_string().contains("test-00000-of-00001.parquet"), "{e}");
        }
        other => panic!("expected Parquet error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn fnv1a64_matches_reference_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn split_is_pinned_and_roughly_90_5_5() {
    // Pinned: these must never move (computed independently with a Python FNV-1a).
    for (id, bucket) in [
        ("doc-0", 36),
        ("doc-1", 47),
        ("doc-5", 91),
        ("doc-16", 99),
        ("8721554", 65),
        ("1790_george_washington_n", 2),
    ] {
        assert_eq!(split_bucket(id), bucket, "{id}");
    }
    assert_eq!(split_of_id("doc-0"), Split::Train);
    assert_eq!(split_of_id("doc-5"), Split::Valid);
    assert_eq!(split_of_id("doc-51"), Split::Valid);
    assert_eq!(split_of_id("doc-16"), Split::Test);
    assert_eq!(split_of_id("doc-29"), Split::Test);

    let mut counts = BTreeMap::new();
    for i in 0..1000 {
        *counts.entry(split_of_id(&format!("doc-{i}"))).or_insert(0) += 1;
    }
    assert_eq!(counts[&Split::Train], 903);
    assert_eq!(counts[&Split::Valid], 44);
    assert_eq!(counts[&Split::Test], 53);
}

#[test]
fn txt_dir_loads_sorted_files_and_splits_by_id() -> TestResult {
    let tmp = tempfile::tempdir()?;
    for i in (0..40).rev() {
        fs::write(
            tmp.path().join(format!("doc-{i}.txt")),
            format!("\u{feff}Text of {i}.\n\n"),
        )?;
    }
    fs::write(tmp.path().join("notes.md"), "ignored")?;
    fs::write(tmp.path().join("blank.txt"), " \n ")?;
    let spec = CorpusSpec::TxtDir(tmp.path().to_path_buf());
    let mut all = Vec::new();
    for split in Split::ALL {
        let docs = load_corpus(&spec, split, Path::new("/x"))?;
        assert!(docs.iter().all(|d| split_of_id(&d.id) == split));
        let mut sorted = docs.clone();
        sorted.sort_by(|a, b| a.source.cmp(&b.source));
        assert_eq!(docs, sorted, "documents come in file-name order");
        all.extend(docs);
    }
    assert_eq!(all.len(), 40, "blank.txt and notes.md are not documents");
    let d16 = all.iter().find(|d| d.id == "doc-16").ok_or("doc-16")?;
    assert_eq!(d16.text, "Text of 16.");
    assert_eq!(d16.title, "doc-16");
    Ok(())
}

#[test]
fn errors_name_the_path_and_how_to_get_the_data() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let home = tmp.path().join("home");
    for spec in [CorpusSpec::WikiSample, CorpusSpec::Sotu] {
        let e = load_corpus(&spec, Split::Train, &home)
            .err()
            .ok_or("expected an error")?;
        let m = e.to_string();
        assert!(m.contains("cargo xtask assets"), "{m}");
        assert!(m.contains(&home.display().to_string()), "{m}");
    }
    // Only one document, in the train split: valid is empty.
    let dir = tmp.path().join("one");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("doc-0.txt"), "hello")?;
    let spec = CorpusSpec::TxtDir(dir.clone());
    assert_eq!(load_corpus(&spec, Split::Train, &home)?.len(), 1);
    match load_corpus(&spec, Split::Valid, &home) {
        Err(DataError::EmptySplit { split, total, .. }) => {
            assert_eq!((split.as_str(), total), ("valid", 1));
        }
        other => panic!("expected EmptySplit, got {other:?}"),
    }
    // Only blank documents.
    fs::write(dir.join("doc-0.txt"), "  \n")?;
    assert!(matches!(
        load_corpus(&spec, Split::Train, &home),
        Err(DataError::EmptyCorpus { .. })
    ));
    // Invalid UTF-8.
    fs::write(dir.join("doc-0.txt"), b"ok \xff")?;
    match load_corpus(&spec, Split::Train, &home) {
        Err(DataError::NotUtf8 { offset, path }) => {
            assert_eq!(offset, 3);
            assert!(path.ends_with("doc-0.txt"));
        }
        other => panic!("expected NotUtf8, got {other:?}"),
    }
    Ok(())
}

#[test]
fn specs_and_splits_parse_and_print() -> TestResult {
    for s in [
        "wiki-sample",
        "sotu",
        "txt-dir:/a/b",
        "wikitext-raw:rel/dir",
        "wikitext-hf:/hf",
    ] {
        let spec: CorpusSpec = s.parse()?;
        assert_eq!(spec.to_string(), s);
    }
    assert_eq!(CorpusSpec::default(), CorpusSpec::WikiSample);
    assert!(matches!(
        "wikitext".parse::<CorpusSpec>(),
        Err(DataError::UnknownCorpus { .. })
    ));
    assert!(matches!(
        "txt-dir:".parse::<CorpusSpec>(),
        Err(DataError::MissingSpecPath { .. })
    ));
    assert_eq!("validation".parse::<Split>()?, Split::Valid);
    assert_eq!("TRAIN".parse::<Split>()?, Split::Train);
    assert!("dev".parse::<Split>().is_err());
    Ok(())
}

/// `tests/fixtures/wikitext-hf/wikitext-2-raw-v1/test-00000-of-00001.parquet` was written by
/// pyarrow 26 the way Hugging Face exports `wikitext` (one `text` string per raw line, Snappy,
/// dictionary encoding, `huggingface` schema metadata), here with 4 row groups.
#[test]
fn wikitext_hf_reads_a_pyarrow_written_file() -> TestResult {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wikitext-hf");
    let spec: CorpusSpec = format!("wikitext-hf:{}", dir.display()).parse()?;
    let docs = load_corpus(&spec, Split::Test, Path::new("/x"))?;
    let raw = split_wikitext(WIKITEXT, Path::new("x"));
    assert_eq!(docs.len(), raw.len());
    for (d, r) in docs.iter().zip(&raw) {
        assert_eq!((&d.title, &d.text), (&r.title, &r.text));
    }
    Ok(())
}

#[test]
fn split_all_is_every_document_of_a_corpus_without_its_own_split() -> TestResult {
    let tmp = tempfile::tempdir()?;
    for i in 0..40 {
        fs::write(
            tmp.path().join(format!("doc{i:02}.txt")),
            format!("document number {i}\n"),
        )?;
    }
    let spec: CorpusSpec = format!("txt-dir:{}", tmp.path().display()).parse()?;
    let home = Path::new("/nonexistent");
    let all = load_corpus(&spec, Split::All, home)?;
    assert_eq!(all.len(), 40);
    let parts: usize = Split::ALL
        .iter()
        .map(|&s| load_corpus(&spec, s, home).map_or(0, |d| d.len()))
        .sum();
    assert_eq!(parts, 40, "the three splits partition `all`");
    assert_eq!("all".parse::<Split>()?, Split::All);
    assert_eq!(Split::All.to_string(), "all");
    // A corpus with its own split refuses it, saying why.
    let wt = tempfile::tempdir()?;
    write_wikitext_raw(wt.path())?;
    let spec: CorpusSpec = format!("wikitext-raw:{}", wt.path().display()).parse()?;
    let err = load_corpus(&spec, Split::All, home)
        .expect_err("a corpus with its own split refuses `all`")
        .to_string();
    assert!(err.contains("own train/valid/test split"), "{err}");
    Ok(())
}
