//! What the command-line tests share: the repository root and a runner for the built binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

/// The repository root (commands run there, as `cargo xtask` does).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `xtask args` from the root with `RUST_LOG=warn`: exit code, stdout, stderr.
pub fn xtask(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fixture corpus's words.
pub const WORDS: [&str; 24] = [
    "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "park", "and", "saw", "bird", "in",
    "tree", "it", "was", "green", "small", "big", "house", "by", "river", ".",
];

/// The vocabulary of a word-level tokenizer: `<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3, then
/// `words` in order.
pub fn word_vocab(words: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    ["<pad>", "<eos>", "<bos>", "<unk>"]
        .iter()
        .chain(words)
        .enumerate()
        .map(|(i, t)| ((*t).to_string(), serde_json::json!(i)))
        .collect()
}

/// A word-level tokenizer.json for the fixture's vocabulary of 256: [`word_vocab`] of
/// [`WORDS`].
pub fn tokenizer_json() -> String {
    let vocab = word_vocab(&WORDS);
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

/// A tiny run's inputs in a temporary directory: the tiny Gemma 3 fixture, a word-level
/// tokenizer, a `txt-dir:` corpus (16 documents, and 3 longer ones in the test split), a small
/// config and an empty `HIPPO_HOME`.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub tokenizer: PathBuf,
    pub corpus: PathBuf,
    pub config: PathBuf,
    pub home: PathBuf,
    pub base: PathBuf,
}

/// Writes a [`Setup`].
pub fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = tmp.path().join("tokenizer.json");
    std::fs::write(&tokenizer, tokenizer_json()).unwrap();
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for d in 0..16usize {
        let n = 40 + 13 * d;
        let text: Vec<&str> = (0..n)
            .map(|i| WORDS[(i * 7 + d * 5) % WORDS.len()])
            .collect();
        std::fs::write(corpus.join(format!("doc{d:02}.txt")), text.join(" ")).unwrap();
    }
    // Documents are split by the hash of their id; these names fall in the test split.
    let test_ids = (0..)
        .map(|k| format!("held{k}"))
        .filter(|id| hippo_data::corpus::split_of_id(id) == hippo_data::Split::Test)
        .take(3);
    for (d, id) in test_ids.enumerate() {
        let text: Vec<&str> = (0..120 + 10 * d)
            .map(|i| WORDS[(i * 5 + d * 3 + i / 7) % WORDS.len()])
            .collect();
        std::fs::write(corpus.join(format!("{id}.txt")), text.join(" ")).unwrap();
    }
    let config = tmp.path().join("small.toml");
    std::fs::write(
        &config,
        "buffer_size = 16\nmax_replay_rounds = 3\nlora_r = 4\nn_anchors = 8\n",
    )
    .unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    Setup {
        tokenizer,
        corpus,
        config,
        home,
        base: root().join("tests/fixtures/tiny-gemma3"),
        tmp,
    }
}
