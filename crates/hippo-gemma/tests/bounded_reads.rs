//! Lengths and counts from a file header are checked against the file size before anything is
//! read or allocated: GGUF strings, arrays, key/value and tensor counts, ranks, shapes and
//! offsets; the safetensors header length. Crafted files with lying headers fail at once, with
//! an error naming what lies, and without a large allocation (a counting allocator in this test
//! binary measures the largest single allocation).
#![allow(missing_docs, clippy::unwrap_used, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static PEAK: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

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

fn s(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn header(tensors: u64, kvs: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&tensors.to_le_bytes());
    b.extend_from_slice(&kvs.to_le_bytes());
    b
}

/// Opens `bytes` (followed by `pad` zero bytes) as a .gguf: the error, the time it took, and the
/// largest single allocation made meanwhile.
fn open(dir: &Path, bytes: &[u8], pad: usize) -> (String, Duration, usize) {
    let p = dir.join("bad.gguf");
    let mut all = bytes.to_vec();
    all.resize(bytes.len() + pad, 0);
    std::fs::write(&p, &all).unwrap();
    drop(all);
    PEAK.store(0, Ordering::Relaxed);
    let t = Instant::now();
    let r = hippo_gemma::GgufWeights::open(&p);
    let took = t.elapsed();
    let peak = PEAK.load(Ordering::Relaxed);
    let e = match r {
        Ok(_) => panic!("a lying header was accepted"),
        Err(e) => e.to_string(),
    };
    (e, took, peak)
}

#[test]
fn a_gguf_claiming_a_petabyte_string_fails_at_once_without_reading_it() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    // One key/value whose key claims 2^52 bytes, then 64 MiB of zeros (the bytes rlx-gguf read
    // until the end of the file before it failed).
    let mut b = header(0, 1);
    b.extend_from_slice(&(1u64 << 52).to_le_bytes());
    let (e, took, peak) = open(tmp.path(), &b, 64 << 20);
    assert!(
        e.contains("claims a length of 4503599627370496 bytes") && e.contains("bad.gguf"),
        "{e}"
    );
    assert!(!e.contains("string truncated"), "rlx-gguf read it: {e}");
    assert!(peak < 1 << 20, "allocated {peak} bytes");
    // Reading (not mapping) 64 MiB takes tens of milliseconds; the check does not read them.
    assert!(took < Duration::from_millis(500), "{took:?}");
}

#[test]
fn every_lying_gguf_length_or_count_is_named() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    // Counts that cannot fit the file.
    cases.push((header(0, u64::MAX), "the key/value count"));
    cases.push((header(1 << 40, 0), "the tensor count"));
    // A string value and an array that claim more than the file.
    let mut b = header(0, 1);
    s(&mut b, "general.name");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    cases.push((b, "the string value of `general.name`"));
    let mut b = header(0, 1);
    s(&mut b, "tokenizer.ggml.scores");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&6u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 61).to_le_bytes());
    cases.push((b, "array `tokenizer.ggml.scores`"));
    // An array of strings, one of which lies.
    let mut b = header(0, 1);
    s(&mut b, "tokenizer.ggml.tokens");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    s(&mut b, "<pad>");
    b.extend_from_slice(&(1u64 << 50).to_le_bytes());
    cases.push((b, "string 1 of array `tokenizer.ggml.tokens`"));
    // An unknown value type.
    let mut b = header(0, 1);
    s(&mut b, "k");
    b.extend_from_slice(&77u32.to_le_bytes());
    cases.push((b, "unknown metadata value type 77"));
    // Tensor infos: rank, shape overflow, shape larger than the file, offset past the end.
    let tensor = |rank: u32, dims: &[u64], offset: u64| {
        let mut b = header(1, 0);
        s(&mut b, "token_embd.weight");
        b.extend_from_slice(&rank.to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b
    };
    cases.push((tensor(1000, &[], 0), "claims 1000 dimensions"));
    cases.push((
        tensor(2, &[1 << 40, 1 << 40], 0),
        "the element count overflows",
    ));
    cases.push((tensor(2, &[1 << 20, 1 << 20], 0), "more than 8 per byte"));
    cases.push((tensor(1, &[4], 1 << 40), "past the end"));
    cases.push((b"GGUF\x09\0\0\0".to_vec(), "unsupported GGUF version 9"));
    cases.push((b"GGU".to_vec(), "not a GGUF file"));
    for (bytes, want) in cases {
        let (e, took, peak) = open(tmp.path(), &bytes, 256);
        assert!(e.contains(want), "want `{want}`: {e}");
        assert!(peak < 1 << 20, "{want}: allocated {peak} bytes");
        assert!(took < Duration::from_millis(500), "{want}: {took:?}");
    }
}

#[test]
fn a_safetensors_header_longer_than_the_file_is_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("model.safetensors");
    let mut b = (1u64 << 40).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    std::fs::write(&p, &b).unwrap();
    let e = match hippo_gemma::SafetensorsWeights::open_files(std::slice::from_ref(&p), "t".into())
    {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("claims 1099511627776 bytes") && e.contains("only 2 bytes"),
        "{e}"
    );
    std::fs::write(&p, b"\x01\x02").unwrap();
    let e = match hippo_gemma::SafetensorsWeights::open_files(&[p], "t".into()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("too short"), "{e}");
}

#[test]
fn a_non_finite_weight_is_named_at_load() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A copy of the tiny Gemma 3 with one NaN in a shard's q_proj.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3");
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    let name = "model.layers.1.self_attn.q_proj.weight";
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let shard = tmp.path().join(index["weight_map"][name].as_str().unwrap());
    let bytes = std::fs::read(&shard).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap();
    let (dtype, shape) = (view.dtype(), view.shape().to_vec());
    // The view's bytes lie inside `bytes`: find where.
    let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
    let elem = 7 * shape[1] + 3; // element [7, 3]
    let mut bytes = bytes.clone();
    match dtype {
        safetensors::Dtype::F32 => {
            bytes[start + 4 * elem..start + 4 * elem + 4].copy_from_slice(&f32::NAN.to_le_bytes())
        }
        safetensors::Dtype::BF16 => bytes[start + 2 * elem..start + 2 * elem + 2]
            .copy_from_slice(&half::bf16::NAN.to_le_bytes()),
        other => panic!("fixture dtype {other:?}"),
    }
    std::fs::write(&shard, bytes).unwrap();
    let e = match hippo_gemma::load(tmp.path().to_str().unwrap(), &burn::tensor::Device::flex()) {
        Ok(_) => panic!("a NaN weight loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains(name) && e.contains("non-finite") && e.contains("[7, 3]"),
        "{e}"
    );
}

#[test]
fn a_config_with_a_trillion_layers_is_refused_before_anything_is_sized_by_it() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3");
    let tmp = tempfile::tempdir().unwrap();
    for name in ["config.v4.json", "config.v5.json"] {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join(name)).unwrap()).unwrap();
        v["num_hidden_layers"] = serde_json::json!(1_000_000_000_000u64);
        if let Some(o) = v.as_object_mut() {
            o.remove("layer_types");
        }
        let p = tmp.path().join("config.json");
        std::fs::write(&p, v.to_string()).unwrap();
        PEAK.store(0, Ordering::Relaxed);
        let e = hippo_gemma::GemmaConfig::from_hf_file(&p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1000000000000 layers"), "{name}: {e}");
        assert!(PEAK.load(Ordering::Relaxed) < 1 << 20);
    }
}
