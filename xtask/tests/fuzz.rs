//! Mutation fuzzing of every loader, on stable Rust: a seeded mutation loop (bit flips,
//! interesting bytes and integers, truncation, insertion, deletion, duplication, splices of
//! syntax tokens and non-UTF-8 bytes, numbers replaced by extreme ones) over seed files that are
//! committed fixtures or made deterministically from them here:
//!
//! * `safetensors`: the tiny Gemma 3's three shards; `index`: its `model.safetensors.index.json`;
//!   `config.json`: its transformers 4.x and 5.x configs — each loaded as a whole model;
//! * `gguf`: a GGUF v3 of the tiny Gemma 3 (F32 tensors, llama.cpp names, written here), loaded;
//! * `tokenizer.json`: a word-level tokenizer, loaded, encoding and decoding a sentence;
//! * `checkpoint`: a tiny HippoFormer checkpoint's `meta.json`, `config.toml` and `model.bpk`,
//!   loaded as is (any changed byte of `model.bpk` or `config.toml` must be refused by the
//!   hashes) and re-sealed (new hashes, so the record and config parsers see the damage);
//! * `trainer-state`: a training checkpoint's `trainer.json` and `memory.safetensors`, re-sealed;
//! * `toml`: `configs/default.toml` and every overlay of `configs/ablations/`, merged over the
//!   defaults as `cargo xtask ablate` does;
//! * `corpus`: `<doc>`-wrapped text (`wiki-sample`), a `txt-dir:`, a `wikitext-raw:` file, an
//!   empty file, and a `<doc` without its end — loaded and tokenized.
//!
//! Each case runs under `catch_unwind`, with a watchdog (a case that takes over 60 s is a hang)
//! and a counting allocator (the largest single allocation of the case is compared with the
//! size of its input). The outcome must be 0 panics and 0 hangs; errors are expected. Cases per
//! format: a few in the normal suite (`HIPPO_FUZZ_CASES`, default 40 for formats that load a
//! model, 200 otherwise); `HIPPO_FUZZ_CASES=100000` runs that many of each. `HIPPO_FUZZ_SEED`
//! changes the seed (default 13).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use hippo_data::{CorpusSpec, Split, TokenizedCorpus, load_corpus};
use hippo_gemma::{GemmaTokenizer, SafetensorsWeights, WeightSource};
use hippo_model::checkpoint::{self, BaseRef};
use hippo_model::{HippoFormer, HippoFormerConfig};
use hippo_train::trainer::state;

use common::root;

/// The largest single allocation since the last reset.
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Peak;

unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        PEAK.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        PEAK.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        PEAK.fetch_max(new, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"=",
    b"\\",
    b"\\u0000",
    b"<doc ",
    b"<doc id=\"x\">",
    b"</doc>",
    b"-1",
    b"0",
    b"1e309",
    b"-1e309",
    b"NaN",
    b"inf",
    b"null",
    b"true",
    b"18446744073709551616",
    b"4294967295",
    b"9007199254740993",
    b"\xff\xfe",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\x00",
    b"[[",
    b"#",
    b"'''",
    b"\r\n",
];
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "4294967296",
    "1000000000000",
    "18446744073709551615",
    "99999999999999999999999",
    "1e30",
    "-0",
    "0.0",
    "nan",
    "65536",
];
const INTS: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 52,
    u64::MAX,
    u64::MAX / 2,
];

/// One to four mutations of `seed`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = [0u8, 0xff, 0x7f, 0x80, b'"', b'0'][rng.below(6)];
            }
            2 if len >= 8 => {
                let i = rng.below(len - 7);
                let v = INTS[rng.below(INTS.len())];
                if rng.below(2) == 0 {
                    b[i..i + 8].copy_from_slice(&v.to_le_bytes());
                } else {
                    b[i..i + 4].copy_from_slice(&(v as u32).to_le_bytes());
                }
            }
            3 => b.truncate(rng.below(len + 1)),
            4 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(i..i, ins);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                b.drain(i..i + n);
            }
            6 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let dup = b[i..i + n].to_vec();
                let at = rng.below(len + 1);
                b.splice(at..at, dup);
            }
            7 => {
                let i = rng.below(len + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                b.splice(i..i, t.iter().copied());
            }
            8 => {
                // Replace a run of digits with an extreme number.
                let digits: Vec<usize> = (0..len).filter(|&i| b[i].is_ascii_digit()).collect();
                if !digits.is_empty() {
                    let s = digits[rng.below(digits.len())];
                    let mut e = s;
                    while e < len && (b[e].is_ascii_digit() || b[e] == b'.') {
                        e += 1;
                    }
                    let n = NUMBERS[rng.below(NUMBERS.len())];
                    b.splice(s..e, n.bytes());
                }
            }
            _ => {
                if len > 0 {
                    let i = rng.below(len);
                    b[i] = rng.next() as u8;
                }
            }
        }
    }
    b
}

/// What a target loads: the mutated bytes are already in place at `file`.
type Run<'a> = Box<dyn Fn(&Path) -> Result<(), String> + 'a>;
/// What runs after the mutated file is written (e.g. re-sealing a checkpoint).
type Prepare<'a> = Box<dyn Fn(&Path) + 'a>;

struct Target<'a> {
    name: &'static str,
    /// (file to replace, seed bytes).
    seeds: Vec<(PathBuf, Vec<u8>)>,
    /// Bytes of the whole input (for the allocation ratio).
    input_bytes: usize,
    cases: usize,
    run: Run<'a>,
    /// Called after the file is written, before `run` (e.g. to re-seal a checkpoint).
    prepare: Option<Prepare<'a>>,
}

#[derive(Default, Debug)]
struct Outcome {
    cases: usize,
    ok: usize,
    errors: usize,
    panics: Vec<String>,
    slowest: Duration,
    peak_alloc: usize,
}

fn cases(default: usize) -> usize {
    std::env::var("HIPPO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_target(t: &Target<'_>, seed: u64, beat: &mpsc::Sender<String>) -> Outcome {
    let mut rng = Rng(seed ^ t.name.bytes().fold(0u64, |h, b| h * 31 + u64::from(b)));
    let mut out = Outcome::default();
    for case in 0..t.cases {
        let (file, seed_bytes) = &t.seeds[case % t.seeds.len()];
        let bytes = if case < t.seeds.len() {
            // The seeds themselves first (they must load).
            seed_bytes.clone()
        } else {
            mutate(seed_bytes, &mut rng)
        };
        let _ = beat.send(format!("{} case {case} ({})", t.name, file.display()));
        std::fs::write(file, &bytes).unwrap();
        if let Some(p) = &t.prepare {
            p(file);
        }
        PEAK.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| (t.run)(file)));
        let took = started.elapsed();
        out.peak_alloc = out.peak_alloc.max(PEAK.load(Ordering::Relaxed));
        out.slowest = out.slowest.max(took);
        out.cases += 1;
        match r {
            Ok(Ok(())) => out.ok += 1,
            Ok(Err(e)) => {
                assert!(
                    case >= t.seeds.len(),
                    "{}: seed {} does not load: {e}",
                    t.name,
                    file.display()
                );
                out.errors += 1;
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                let keep = std::env::temp_dir().join(format!("hippo-fuzz-{}-{case}", t.name));
                let _ = std::fs::write(&keep, &bytes);
                out.panics.push(format!(
                    "case {case} ({}): {msg}; input kept at {}",
                    file.display(),
                    keep.display()
                ));
            }
        }
        std::fs::write(file, seed_bytes).unwrap();
    }
    if let Some(p) = &t.prepare
        && let Some((file, _)) = t.seeds.first()
    {
        p(file);
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn dir_bytes(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len() as usize)
        .sum()
}

fn tiny() -> PathBuf {
    root().join("tests/fixtures/tiny-gemma3")
}

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn load_model(path: &Path) -> Result<(), String> {
    let m = hippo_gemma::load(path.to_str().unwrap(), &Device::flex()).map_err(e2s)?;
    // A forward over a few tokens: the loaded model must be usable, not just built.
    let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(vec![2i64, 5, 7], [1, 3]),
        &Device::flex(),
    );
    let _ = m.model.forward(ids, None);
    Ok(())
}

// ---- GGUF seed: the tiny Gemma 3 in GGUF v3, F32 tensors -------------------------------------

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn tiny_gguf() -> Vec<u8> {
    let src = SafetensorsWeights::open_dir(&tiny()).unwrap();
    let config =
        hippo_gemma::load::load_config(&hippo_gemma::resolve(tiny().to_str().unwrap()).unwrap())
            .unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for name in src.names() {
        if let Some(g) = hippo_gemma::weights::gguf_name(&name, &config) {
            let t = src.get(&name).unwrap().unwrap();
            // Norms: GGUF stores the whole multiplier (1 + w).
            let data = if name.ends_with("norm.weight") {
                t.data.iter().map(|x| x + 1.0).collect()
            } else {
                t.data
            };
            tensors.push((g, t.shape.iter().rev().copied().collect(), data));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let u32s: [(&str, u32); 8] = [
        ("gemma3.embedding_length", config.hidden_size as u32),
        ("gemma3.block_count", config.num_layers as u32),
        ("gemma3.attention.head_count", config.num_heads as u32),
        ("gemma3.attention.head_count_kv", config.num_kv_heads as u32),
        ("gemma3.attention.key_length", config.head_dim as u32),
        (
            "gemma3.feed_forward_length",
            config.intermediate_size as u32,
        ),
        (
            "gemma3.context_length",
            config.max_position_embeddings as u32,
        ),
        ("gemma3.attention.sliding_window", 4),
    ];
    let mut kv = Vec::new();
    let mut n_kv = 0u64;
    gguf_string(&mut kv, "general.architecture");
    kv.extend_from_slice(&8u32.to_le_bytes());
    gguf_string(&mut kv, "gemma3");
    n_kv += 1;
    for (k, v) in u32s {
        gguf_string(&mut kv, k);
        kv.extend_from_slice(&4u32.to_le_bytes());
        kv.extend_from_slice(&v.to_le_bytes());
        n_kv += 1;
    }
    gguf_string(&mut kv, "gemma3.rope.freq_base");
    kv.extend_from_slice(&6u32.to_le_bytes());
    kv.extend_from_slice(&1_000_000f32.to_le_bytes());
    n_kv += 1;
    // An array of strings and one of integers (the tokenizer's shape in real files).
    gguf_string(&mut kv, "tokenizer.ggml.tokens");
    kv.extend_from_slice(&9u32.to_le_bytes());
    kv.extend_from_slice(&8u32.to_le_bytes());
    kv.extend_from_slice(&4u64.to_le_bytes());
    for t in ["<pad>", "<eos>", "<bos>", "<unk>"] {
        gguf_string(&mut kv, t);
    }
    gguf_string(&mut kv, "tokenizer.ggml.token_type");
    kv.extend_from_slice(&9u32.to_le_bytes());
    kv.extend_from_slice(&5u32.to_le_bytes());
    kv.extend_from_slice(&4u64.to_le_bytes());
    for t in [3i32, 3, 3, 2] {
        kv.extend_from_slice(&t.to_le_bytes());
    }
    n_kv += 2;

    let mut info = Vec::new();
    let mut data = Vec::new();
    for (name, shape, values) in &tensors {
        while data.len() % 32 != 0 {
            data.push(0);
        }
        gguf_string(&mut info, name);
        info.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in shape {
            info.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        info.extend_from_slice(&0u32.to_le_bytes()); // F32
        info.extend_from_slice(&(data.len() as u64).to_le_bytes());
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&n_kv.to_le_bytes());
    out.extend_from_slice(&kv);
    out.extend_from_slice(&info);
    while out.len() % 32 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&data);
    out
}

/// ASCII bytes as ids (< 128), BOS = 2: fits the fixture's vocabulary of 256.
struct Tiny;

impl hippo_data::Tokenize for Tiny {
    fn encode(&self, text: &str) -> hippo_data::Result<Vec<u32>> {
        Ok(std::iter::once(2)
            .chain(text.bytes().map(|b| u32::from(b % 128)))
            .collect())
    }

    fn fingerprint(&self) -> hippo_data::Result<String> {
        Ok("tiny".into())
    }
}

// ---- Seeds for the other formats ------------------------------------------------------------

const WORDS: [&str; 12] = [
    "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "park", "and", ".",
];

fn tokenizer_json() -> String {
    let vocab = common::word_vocab(&WORDS);
    serde_json::to_string_pretty(&serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": 2, "content": "<bos>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    }))
    .unwrap()
}

fn wiki_text() -> String {
    let mut s = String::new();
    for d in 0..6 {
        s.push_str(&format!(
            "<doc id=\"{d}\" url=\"https://x/{d}\" title=\"T &amp; {d}\">\nT {d}\n\n"
        ));
        for l in 0..3 {
            let line: Vec<&str> = (0..12).map(|i| WORDS[(i + l + d) % WORDS.len()]).collect();
            s.push_str(&line.join(" "));
            s.push('\n');
        }
        s.push_str("</doc>\n");
    }
    s
}

fn wikitext_raw() -> String {
    let mut s = String::from(" \n = Title One = \n \n");
    s.push_str(" the cat sat on the mat . \n \n = = Section = = \n \n a dog ran . \n");
    s.push_str(" \n = Title Two = \n \n and to the park . \n");
    s
}

#[test]
fn mutated_inputs_give_errors_never_panics_hangs_or_huge_allocations() {
    let seed: u64 = std::env::var("HIPPO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(13);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let device = Device::flex();

    // Model directories.
    let st_dir = t.join("st");
    copy_dir(&tiny(), &st_dir);
    let cfg_dir = t.join("cfg");
    copy_dir(&tiny(), &cfg_dir);
    let shards: Vec<(PathBuf, Vec<u8>)> = (1..=3)
        .map(|i| {
            let n = format!("model-0000{i}-of-00003.safetensors");
            (st_dir.join(&n), std::fs::read(tiny().join(&n)).unwrap())
        })
        .collect();
    let model_bytes = dir_bytes(&tiny());

    // GGUF.
    let gguf = t.join("tiny.gguf");
    let gguf_seed = tiny_gguf();

    // Tokenizer.
    let tok = t.join("tokenizer.json");

    // Checkpoints: a model checkpoint (as is, and re-sealed) and a training checkpoint.
    let base_dir = tiny();
    let base_ref = BaseRef::of(&base_dir).unwrap();
    let small = HippoFormerConfig {
        buffer_size: 8,
        max_replay_rounds: 2,
        lora_r: 2,
        n_anchors: 4,
        ..HippoFormerConfig::default()
    };
    let gemma = hippo_gemma::load(base_dir.to_str().unwrap(), &device)
        .unwrap()
        .model;
    let ck = t.join("ck");
    let m = HippoFormer::new(gemma.clone(), small.clone(), &device).unwrap();
    checkpoint::save(&m, &ck, 1, &base_ref).unwrap();
    let ck_resealed = t.join("ck-resealed");
    checkpoint::save(&m, &ck_resealed, 1, &base_ref).unwrap();
    let ck_seeds = |dir: &Path, names: &[&str]| -> Vec<(PathBuf, Vec<u8>)> {
        names
            .iter()
            .map(|n| (dir.join(n), std::fs::read(dir.join(n)).unwrap()))
            .collect()
    };
    let reseal = |file: &Path| {
        let dir = file.parent().unwrap();
        let meta = checkpoint::read_meta(dir).unwrap();
        checkpoint::seal(dir, meta.step, &meta.base, meta.tensors).unwrap();
    };
    let load_ck = |file: &Path| -> Result<(), String> {
        let dir = file.parent().unwrap();
        let (m, _) = checkpoint::load(gemma.clone(), &base_dir, dir, &device).map_err(e2s)?;
        let _ = m.config.buffer_size;
        Ok(())
    };
    let train_dir = t.join("train");
    let trainer_ck = {
        let docs: Vec<hippo_data::Document> = (0..4)
            .map(|i| hippo_data::Document {
                id: format!("d{i}"),
                title: String::new(),
                text: "the cat sat on the mat . ".repeat(3 + i),
                source: "fuzz".into(),
                url: None,
            })
            .collect();
        let corpus = TokenizedCorpus::build(&docs, &Tiny, "fuzz", Split::Train).unwrap();
        let opts = hippo_train::TrainOptions {
            seq_len: 8,
            batch_size: 2,
            max_steps: Some(1),
            valid_batches: 0,
            output_dir: train_dir.clone(),
            log_every: 100,
            ..hippo_train::TrainOptions::default()
        };
        let s = hippo_train::train(
            gemma.clone(),
            &base_dir,
            small.clone(),
            std::sync::Arc::new(corpus),
            None,
            &opts,
            &device,
        )
        .unwrap();
        s.final_checkpoint.unwrap()
    };
    let d_model = gemma.config().hidden_size;

    // TOML configs and overlays.
    let toml_file = t.join("config.toml");
    let mut toml_seeds = vec![(
        toml_file.clone(),
        std::fs::read(root().join("configs/default.toml")).unwrap(),
    )];
    let overlay_file = t.join("overlay.toml");
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(root().join("configs/ablations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    overlays.sort();
    let overlay_seeds: Vec<(PathBuf, Vec<u8>)> = overlays
        .iter()
        .map(|p| (overlay_file.clone(), std::fs::read(p).unwrap()))
        .collect();
    toml_seeds.truncate(1);

    // Corpora.
    let home = t.join("home");
    std::fs::create_dir_all(home.join("corpora")).unwrap();
    let wiki = home.join("corpora/wiki.utf8");
    let txt_dir = t.join("txt");
    std::fs::create_dir_all(&txt_dir).unwrap();
    for i in 0..3 {
        std::fs::write(txt_dir.join(format!("b{i}.txt")), "a dog ran to the park .").unwrap();
    }
    let txt = txt_dir.join("a.txt");
    let raw_dir = t.join("raw");
    std::fs::create_dir_all(&raw_dir).unwrap();
    let raw = raw_dir.join("wiki.train.raw");
    for s in ["valid", "test"] {
        std::fs::write(raw_dir.join(format!("wiki.{s}.raw")), wikitext_raw()).unwrap();
    }
    let corpus_tok = GemmaTokenizer::from_file(&{
        let p = t.join("corpus-tokenizer.json");
        std::fs::write(&p, tokenizer_json()).unwrap();
        p
    })
    .unwrap();
    let load_tokenized = |spec: CorpusSpec, split: Split| -> Result<(), String> {
        let docs = load_corpus(&spec, split, &home).map_err(e2s)?;
        let c = TokenizedCorpus::build(&docs, &corpus_tok, "fuzz", split).map_err(e2s)?;
        let _ = c.docs.len();
        Ok(())
    };

    let heavy = cases(40);
    let light = cases(200);
    let targets: Vec<Target<'_>> = vec![
        Target {
            name: "safetensors",
            seeds: shards,
            input_bytes: model_bytes,
            cases: heavy,
            run: Box::new(|_| load_model(&st_dir)),
            prepare: None,
        },
        Target {
            name: "safetensors-index",
            seeds: vec![(
                st_dir.join("model.safetensors.index.json"),
                std::fs::read(tiny().join("model.safetensors.index.json")).unwrap(),
            )],
            input_bytes: model_bytes,
            cases: heavy,
            run: Box::new(|_| load_model(&st_dir)),
            prepare: None,
        },
        Target {
            name: "config.json",
            seeds: ["config.v4.json", "config.v5.json"]
                .iter()
                .map(|n| {
                    (
                        cfg_dir.join("config.json"),
                        std::fs::read(tiny().join(n)).unwrap(),
                    )
                })
                .collect(),
            input_bytes: model_bytes,
            cases: heavy,
            run: Box::new(|_| load_model(&cfg_dir)),
            prepare: None,
        },
        Target {
            name: "gguf",
            input_bytes: gguf_seed.len(),
            seeds: vec![(gguf.clone(), gguf_seed)],
            cases: heavy,
            run: Box::new(load_model),
            prepare: None,
        },
        Target {
            name: "tokenizer.json",
            seeds: vec![(tok.clone(), tokenizer_json().into_bytes())],
            input_bytes: 4096,
            cases: light,
            run: Box::new(|p| {
                let t = GemmaTokenizer::from_file(p).map_err(e2s)?;
                let ids = t.encode("the cat sat on the mat .", true).map_err(e2s)?;
                t.decode(&ids).map_err(e2s)?;
                Ok(())
            }),
            prepare: None,
        },
        Target {
            name: "checkpoint",
            seeds: ck_seeds(
                &ck,
                &[
                    checkpoint::META_FILE,
                    checkpoint::CONFIG_FILE,
                    checkpoint::MODEL_FILE,
                ],
            ),
            input_bytes: model_bytes + dir_bytes(&ck),
            cases: heavy,
            run: Box::new(|p| {
                let r = load_ck(p);
                // Any change to a hashed file must be refused.
                let name = p.file_name().unwrap().to_string_lossy();
                if name != checkpoint::META_FILE && r.is_ok() {
                    let meta = checkpoint::read_meta(p.parent().unwrap()).unwrap();
                    let now = hippo_model::integrity::sha256_file(p).unwrap();
                    assert_eq!(
                        meta.files[name.as_ref()],
                        now,
                        "a changed {name} loaded despite its hash"
                    );
                }
                r
            }),
            prepare: None,
        },
        Target {
            name: "checkpoint-resealed",
            seeds: ck_seeds(
                &ck_resealed,
                &[checkpoint::CONFIG_FILE, checkpoint::MODEL_FILE],
            ),
            input_bytes: model_bytes + dir_bytes(&ck_resealed),
            cases: heavy,
            run: Box::new(load_ck),
            prepare: Some(Box::new(reseal)),
        },
        Target {
            name: "trainer-state",
            seeds: ck_seeds(&trainer_ck, &[state::TRAINER_FILE, state::MEMORY_FILE]),
            input_bytes: dir_bytes(&trainer_ck),
            cases: light,
            run: Box::new(|p| {
                let dir = p.parent().unwrap();
                checkpoint::verify(dir).map_err(e2s)?;
                state::read_trainer_state(dir).map_err(e2s)?;
                state::load_memory(&dir.join(state::MEMORY_FILE), [2, 8, d_model], &device)
                    .map_err(e2s)?;
                Ok(())
            }),
            prepare: Some(Box::new(reseal)),
        },
        Target {
            name: "toml",
            seeds: toml_seeds,
            input_bytes: 4096,
            cases: light,
            run: Box::new(|p| {
                HippoFormerConfig::from_toml_file(p).map_err(e2s)?;
                Ok(())
            }),
            prepare: None,
        },
        Target {
            name: "ablation-overlay",
            seeds: overlay_seeds,
            input_bytes: 4096,
            cases: light,
            run: Box::new(|p| {
                // As `cargo xtask ablate` merges a variant over the full config.
                let mut base: toml::Table =
                    toml::from_str(&HippoFormerConfig::default().to_toml()).unwrap();
                let text = std::fs::read_to_string(p).map_err(e2s)?;
                let overlay: toml::Table = toml::from_str(&text).map_err(e2s)?;
                base.extend(overlay);
                let merged = toml::to_string(&base).map_err(e2s)?;
                HippoFormerConfig::from_toml_str(&merged, "overlay").map_err(e2s)?;
                Ok(())
            }),
            prepare: None,
        },
        Target {
            name: "corpus",
            seeds: vec![
                (wiki.clone(), wiki_text().into_bytes()),
                (
                    txt.clone(),
                    b"the cat sat on the mat . a dog ran .".to_vec(),
                ),
                (raw.clone(), wikitext_raw().into_bytes()),
                (txt.clone(), Vec::new()),
            ],
            input_bytes: 4096,
            cases: light,
            run: Box::new(|p| {
                if p == wiki {
                    // Every split: the hash split of a damaged file may leave one empty.
                    let mut any = Err(String::new());
                    for s in [Split::Train, Split::Valid, Split::Test] {
                        any = any.or(load_tokenized(CorpusSpec::WikiSample, s));
                    }
                    any.map_err(|e| if e.is_empty() { "no split".into() } else { e })
                } else if p == raw {
                    load_tokenized(CorpusSpec::WikitextRaw(raw_dir.clone()), Split::Train)
                } else {
                    load_tokenized(CorpusSpec::TxtDir(txt_dir.clone()), Split::Train).or_else(
                        |_| load_tokenized(CorpusSpec::TxtDir(txt_dir.clone()), Split::Test),
                    )
                }
            }),
            prepare: None,
        },
    ];
    // A `<doc` without its end, and non-UTF-8 text, as fixed cases.
    std::fs::write(&wiki, "<doc id=\"1\" title=\"x\">\nbody without an end\n").unwrap();
    let e = load_corpus(&CorpusSpec::WikiSample, Split::Train, &home).unwrap_err();
    assert!(e.to_string().contains("never closed"), "{e}");
    std::fs::write(&txt, b"caf\xe9 \xff\xfe").unwrap();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
        load_tokenized(CorpusSpec::TxtDir(txt_dir.clone()), Split::Train)
    }));
    assert!(r.is_ok(), "non-UTF-8 text panicked");

    // Watchdog: each case is announced before it runs; a case silent for 60 s is a hang, and
    // the watchdog then fails the whole test process (a hung thread cannot be unwound).
    let (beat_tx, beat_rx) = mpsc::channel::<String>();
    let watchdog = std::thread::spawn(move || {
        let mut current = String::from("setup");
        loop {
            match beat_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(c) => current = c,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    eprintln!("HANG: {current} ran for over 60 s");
                    std::process::exit(101);
                }
            }
        }
    });
    let started = Instant::now();
    let results: Vec<_> = targets
        .iter()
        .map(|t| (t.name, t.input_bytes, run_target(t, seed, &beat_tx)))
        .collect();
    drop(beat_tx);
    watchdog.join().unwrap();
    let mut panics: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    eprintln!(
        "{:<20} {:>7} {:>6} {:>7} {:>6} {:>10} {:>12} {:>12}",
        "format", "cases", "ok", "errors", "panics", "slowest", "peak alloc", "input bytes"
    );
    for (name, input, o) in &results {
        eprintln!(
            "{name:<20} {:>7} {:>6} {:>7} {:>6} {:>10.1?} {:>12} {:>12}",
            o.cases,
            o.ok,
            o.errors,
            o.panics.len(),
            o.slowest,
            o.peak_alloc,
            input
        );
        if !o.panics.is_empty() {
            panics.insert(name, o.panics.clone());
        }
        // No allocation beyond a fixed multiple of the input (f32 dequantisation and Burn's
        // buffers stay within it; a length taken from a lying header does not).
        assert!(
            o.peak_alloc <= 64 * input + (64 << 20),
            "{name}: a single allocation of {} bytes for {input} bytes of input",
            o.peak_alloc
        );
    }
    eprintln!("seed {seed}, {:.1?} in all", started.elapsed());
    assert!(panics.is_empty(), "panics: {panics:#?}");
}
