//! Weight sources: Hugging Face safetensors (single file or sharded; f32, bf16, f16) and GGUF
//! (F32, F16, BF16, Q8_0, Q4_K, Q5_0, Q6_K and the other types `rlx-gguf` decodes).
//!
//! Every source speaks Hugging Face tensor names (`model.layers.N.self_attn.q_proj.weight`) and
//! returns row-major f32 data in Hugging Face's shape (`[out, in]` for projections); the model
//! builder transposes projections into Burn's `[in, out]` layout.
//!
//! Norm weights differ: Hugging Face stores `w` and Gemma multiplies by `1 + w`; llama.cpp's
//! converter already added the 1 to every Gemma norm (q/k norms included). [`WeightSource::norm_offset`]
//! says which, and the builder stores the full multiplier.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use hippo_data::seed::SplitMix64;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::config::GemmaConfig;
use crate::error::{GemmaError, Result};

/// A dense f32 tensor read from a checkpoint.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Row-major shape (outermost first).
    pub shape: Vec<usize>,
    /// Values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

/// A checkpoint that yields tensors by Hugging Face name.
pub trait WeightSource {
    /// A description for error messages (the file or directory).
    fn origin(&self) -> String;
    /// The tensor, dequantised/converted to f32, or `None` if the checkpoint lacks it.
    fn get(&self, hf_name: &str) -> Result<Option<RawTensor>>;
    /// What to add to a stored norm weight to get Gemma's multiplier (1 for HF, 0 for GGUF).
    fn norm_offset(&self) -> f32;
    /// Every tensor name the checkpoint holds (Hugging Face naming where a mapping exists).
    fn names(&self) -> Vec<String>;
}

/// Reads `name` and checks its shape.
pub fn fetch(src: &dyn WeightSource, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
    let t = src.get(name)?.ok_or_else(|| GemmaError::MissingTensor {
        name: name.to_string(),
        origin: src.origin(),
    })?;
    if t.shape != expected {
        return Err(GemmaError::ShapeMismatch {
            name: name.to_string(),
            origin: src.origin(),
            expected: expected.to_vec(),
            found: t.shape,
        });
    }
    check_finite(&src.origin(), name, &t.shape, &t.data)?;
    Ok(t.data)
}

/// A weight that is NaN or infinite is an error naming the tensor, the element (flat index
/// and multi-index) and the value, found at load rather than as a NaN logit later.
pub fn check_finite(origin: &str, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
    let Some(i) = data.iter().position(|x| !x.is_finite()) else {
        return Ok(());
    };
    let bad = data.iter().filter(|x| !x.is_finite()).count();
    let mut rest = i;
    let mut index = vec![0usize; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            index[k] = rest % d;
            rest /= d;
        }
    }
    Err(GemmaError::corrupt(
        origin,
        format!(
            "tensor `{name}` {shape:?} holds a non-finite weight: element {index:?} (flat {i})              is {}; {bad} of its {} elements are non-finite",
            data[i],
            data.len()
        ),
    ))
}

/// The safetensors header length (the first 8 bytes, little-endian) must leave room for the
/// header inside the file; checked before the header is parsed.
fn check_safetensors_header(path: &Path, bytes: &[u8]) -> Result<()> {
    let Some(head) = bytes.get(..8) else {
        return Err(GemmaError::corrupt(
            path,
            format!(
                "{} bytes: too short for a safetensors file (8-byte header length)",
                bytes.len()
            ),
        ));
    };
    let mut a = [0u8; 8];
    a.copy_from_slice(head);
    let n = u64::from_le_bytes(a);
    let room = bytes.len() as u64 - 8;
    if n > room {
        return Err(GemmaError::corrupt(
            path,
            format!(
                "the safetensors header claims {n} bytes, but the file has only {room} bytes                  after the length field"
            ),
        ));
    }
    Ok(())
}

/// Memory-maps a file read-only.
#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| GemmaError::io(path, e))?;
    // SAFETY: the mapping is read-only and lives as long as the source; as with every mmap-based
    // loader, truncating the file underneath a running process is undefined behaviour.
    unsafe { Mmap::map(&file) }.map_err(|e| GemmaError::io(path, e))
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// Hugging Face safetensors: `model.safetensors`, or shards listed in `model.safetensors.index.json`.
pub struct SafetensorsWeights {
    origin: String,
    shards: Vec<Shard>,
    /// Tensor name → shard index.
    index: BTreeMap<String, usize>,
}

impl SafetensorsWeights {
    /// Opens a checkpoint directory (single file or sharded).
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| GemmaError::io(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| GemmaError::corrupt(&index_path, format!("invalid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| GemmaError::corrupt(&index_path, "no `weight_map` object"))?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
            let mut src = Self::open_files(&paths, dir.display().to_string())?;
            for (name, file) in map {
                let f = file.as_str().unwrap_or_default();
                if !src.index.contains_key(name) {
                    return Err(GemmaError::corrupt(
                        dir.join(f),
                        format!("the index lists `{name}` in this shard, but the shard lacks it"),
                    ));
                }
            }
            src.origin = dir.display().to_string();
            Ok(src)
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(GemmaError::ModelNotFound(format!(
                    "{} has neither model.safetensors nor model.safetensors.index.json",
                    dir.display()
                )));
            }
            Self::open_files(&[single], dir.display().to_string())
        }
    }

    /// Opens the given safetensors files as one checkpoint.
    pub fn open_files(paths: &[PathBuf], origin: String) -> Result<Self> {
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for path in paths {
            let map = map_file(path)?;
            check_safetensors_header(path, &map)?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| GemmaError::corrupt(path, format!("{e:?}")))?;
            for name in st.names() {
                index.insert(name.to_string(), shards.len());
            }
            shards.push(Shard {
                path: path.clone(),
                map,
            });
        }
        Ok(Self {
            origin,
            shards,
            index,
        })
    }
}

impl WeightSource for SafetensorsWeights {
    fn origin(&self) -> String {
        self.origin.clone()
    }

    fn get(&self, hf_name: &str) -> Result<Option<RawTensor>> {
        let Some(&i) = self.index.get(hf_name) else {
            return Ok(None);
        };
        let shard = &self.shards[i];
        let st = SafeTensors::deserialize(&shard.map)
            .map_err(|e| GemmaError::corrupt(&shard.path, format!("{e:?}")))?;
        let view = st
            .tensor(hf_name)
            .map_err(|e| GemmaError::corrupt(&shard.path, format!("{hf_name}: {e:?}")))?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(GemmaError::corrupt(
                    &shard.path,
                    format!("tensor `{hf_name}` has dtype {other:?}; expected F32, BF16 or F16"),
                ));
            }
        };
        Ok(Some(RawTensor {
            shape: view.shape().to_vec(),
            data,
        }))
    }

    fn norm_offset(&self) -> f32 {
        1.0
    }

    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }
}

/// Hugging Face name → llama.cpp GGUF name for the Gemma families.
pub fn gguf_name(hf_name: &str, config: &GemmaConfig) -> Option<String> {
    match hf_name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        _ => {}
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let sandwich = config.sandwich_norms();
    let short = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        // Gemma 1's post-attention norm is the pre-MLP norm; llama.cpp calls it ffn_norm.
        "post_attention_layernorm.weight" if !sandwich => "ffn_norm.weight",
        "post_attention_layernorm.weight" => "post_attention_norm.weight",
        "pre_feedforward_layernorm.weight" => "ffn_norm.weight",
        "post_feedforward_layernorm.weight" => "post_ffw_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}"))
}

/// A GGUF file (llama.cpp layout), dequantised tensor by tensor at load.
pub struct GgufWeights {
    path: PathBuf,
    file: rlx_gguf::GgufFile,
    config: GemmaConfig,
    /// GGUF name → HF name, for [`WeightSource::names`].
    reverse: HashMap<String, String>,
}

impl GgufWeights {
    /// Opens a `.gguf` file and reads its Gemma config from the metadata.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(GemmaError::ModelNotFound(format!(
                "{} does not exist",
                path.display()
            )));
        }
        // Lengths and counts first, against the file size, before rlx-gguf reads any of them.
        {
            let map = map_file(path)?;
            crate::gguf_check::check_header(&map).map_err(|e| GemmaError::corrupt(path, e))?;
        }
        let file = rlx_gguf::GgufFile::from_path_mmap(path)
            .map_err(|e| GemmaError::corrupt(path, format!("{e:#}")))?;
        let origin = path.display().to_string();
        let arch = file
            .metadata
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| GemmaError::config(&origin, "no general.architecture"))?
            .to_string();
        let embd = file
            .get("token_embd.weight")
            .ok_or_else(|| GemmaError::MissingTensor {
                name: "token_embd.weight".into(),
                origin: origin.clone(),
            })?;
        // GGUF lists dimensions innermost first: [hidden, vocab].
        let vocab_size = embd.shape.last().copied().unwrap_or(0);
        let get_u = |k: &str| file.metadata.get(k).and_then(|v| v.as_u64());
        let get_f = |k: &str| {
            file.metadata.get(k).and_then(|v| match v {
                rlx_gguf::MetaValue::F32(x) => Some(*x as f64),
                rlx_gguf::MetaValue::F64(x) => Some(*x),
                other => other.as_u64().map(|x| x as f64),
            })
        };
        let config = GemmaConfig::from_gguf_metadata(&arch, &get_u, &get_f, vocab_size, &origin)?;
        let mut reverse = HashMap::new();
        for name in crate::model::hf_tensor_names(&config) {
            if let Some(g) = gguf_name(&name, &config) {
                reverse.insert(g, name);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            config,
            reverse,
        })
    }

    /// The config read from the metadata.
    pub fn config(&self) -> &GemmaConfig {
        &self.config
    }

    /// The stored GGML type of a tensor, by GGUF name.
    pub fn tensor_type(&self, gguf_name: &str) -> Option<String> {
        self.file.get(gguf_name).map(|t| format!("{:?}", t.dtype))
    }

    /// Dequantises a tensor by its GGUF name; the shape is returned row-major (GGUF's reversed).
    pub fn dequant(&self, gguf_name: &str) -> Result<Option<RawTensor>> {
        if self.file.get(gguf_name).is_none() {
            return Ok(None);
        }
        let (data, mut shape) = self
            .file
            .dequant_f32(gguf_name)
            .map_err(|e| GemmaError::corrupt(&self.path, format!("{gguf_name}: {e:#}")))?;
        shape.reverse();
        Ok(Some(RawTensor { shape, data }))
    }
}

impl WeightSource for GgufWeights {
    fn origin(&self) -> String {
        self.path.display().to_string()
    }

    fn get(&self, hf_name: &str) -> Result<Option<RawTensor>> {
        match gguf_name(hf_name, &self.config) {
            Some(g) => self.dequant(&g),
            None => Ok(None),
        }
    }

    fn norm_offset(&self) -> f32 {
        0.0
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .file
            .keys()
            .map(|g| {
                self.reverse
                    .get(g)
                    .cloned()
                    .unwrap_or_else(|| g.to_string())
            })
            .collect();
        v.sort();
        v
    }
}

/// Seeded random weights with Gemma-like statistics (projections `N(0, 0.02)`-ish uniform,
/// norm weights near 0 so that `1 + w ≈ 1`), for tests and examples without a checkpoint.
pub struct RandomWeights {
    specs: BTreeMap<String, Vec<usize>>,
    seed: u64,
}

impl RandomWeights {
    /// Random weights for every tensor `config` needs.
    pub fn new(config: &GemmaConfig, seed: u64) -> Self {
        Self {
            specs: crate::model::hf_tensor_specs(config).into_iter().collect(),
            seed,
        }
    }
}

impl WeightSource for RandomWeights {
    fn origin(&self) -> String {
        format!("random weights (seed {})", self.seed)
    }

    fn get(&self, hf_name: &str) -> Result<Option<RawTensor>> {
        let Some(shape) = self.specs.get(hf_name) else {
            return Ok(None);
        };
        // SplitMix64 (hippo_data::seed), seeded per tensor name.
        let mut rng = SplitMix64(self.seed);
        for b in hf_name.bytes() {
            rng.0 = rng.0.rotate_left(5) ^ u64::from(b);
            rng.next_u64();
        }
        let n: usize = shape.iter().product();
        // Uniform(-a, a) has std a/sqrt(3): a = 0.1 gives ≈ 0.058 for projections, so that tiny
        // models produce logits that are far from flat; norms get small offsets around 1.
        let amp = 0.1f32;
        let data = (0..n)
            .map(|_| {
                let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * amp
            })
            .collect();
        Ok(Some(RawTensor {
            shape: shape.clone(),
            data,
        }))
    }

    fn norm_offset(&self) -> f32 {
        1.0
    }

    fn names(&self) -> Vec<String> {
        self.specs.keys().cloned().collect()
    }
}
