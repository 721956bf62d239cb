//! HippoFormer over a long text: the real Gemma-3-270M reads it in 256-token segments, the
//! memory carries what it stored from earlier segments, and at the end of each segment the
//! example prints what the memory retrieved for the segment's last position: the entries with
//! the most replay weight and the token that followed each in the text.
//!
//! ```text
//! cargo xtask assets                                   # once: model, tokenizer, corpora
//! cargo run --release --example long_text              # the first SOTU test address
//! cargo run --release --example long_text -- essay.txt [runs/cal]   # a text, a checkpoint
//! ```
//!
//! Without a checkpoint the model is fresh: its logits equal the base's (the fusion is closed)
//! but retrieval already works, by cosine similarity of the base's hidden states. With a
//! checkpoint written by `cargo xtask calibrate` or `train`, the retrieved distribution is
//! also mixed into the prediction; the example prints the mixture's opening.
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::path::Path;

use burn::tensor::Device;
use hippo_data::{CorpusSpec, Segments, Split, load_corpus};
use hippo_gemma::GemmaTokenizer;
use hippo_model::{HippoFormer, HippoFormerConfig, StreamRunner};

const SEGMENT: usize = 256;
const SHOWN: usize = 3;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = Device::flex();
    let gguf = hippo_gemma::load::default_model_path()
        .filter(|p| p.is_file())
        .ok_or("no Gemma-3-270M in the asset cache: run `cargo xtask assets` first")?;
    let loaded = hippo_gemma::load(&gguf.display().to_string(), &device)?;
    let tokenizer = GemmaTokenizer::from_file(
        &loaded
            .location
            .default_tokenizer()
            .ok_or("no tokenizer.json beside the model")?,
    )?;
    let text = match args.first() {
        Some(path) => std::fs::read_to_string(path)?,
        None => {
            let home = hippo_data::default_home()?;
            let docs = load_corpus(&"sotu".parse::<CorpusSpec>()?, Split::Test, &home)?;
            let doc = docs
                .into_iter()
                .next()
                .ok_or("the SOTU test split is empty")?;
            println!("{} ({})", doc.title, doc.id);
            doc.text
        }
    };
    let model = match args.get(1) {
        Some(dir) => {
            let (model, _) =
                hippo_model::checkpoint::load(loaded.model, &gguf, Path::new(dir), &device)?;
            model.for_inference()
        }
        None => HippoFormer::new(loaded.model, HippoFormerConfig::default(), &device)?,
    };
    println!(
        "probability mixture opening o = {:.3} (λ_t = o·σ(gate) where memory has entries)",
        model.mix.opening.val().into_scalar::<f32>()
    );

    // The first 4,096 tokens, in the model's segments (BOS before every later segment).
    let ids: Vec<u32> = tokenizer
        .encode(&text, true)?
        .into_iter()
        .take(4096)
        .collect();
    let mut run = StreamRunner::new(&model, 1, &device);
    for segment in Segments::of_document(&ids, model.segment_layout(SEGMENT)) {
        let batch = hippo_data::SegmentBatch::single(&segment, 0);
        let step = run.read(&batch)?;
        let state = run.state()?.clone();
        // What the memory (earlier segments only) gives the segment's last position.
        let retrieval = model.memory.retrieve(step.output.hidden.clone(), &state)?;
        let [_, t, m] = retrieval.weights.dims();
        let weights: Vec<f32> = retrieval
            .next_token_weights(&state)
            .slice([0..1, t - 1..t, 0..m])
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| format!("reading the weights back: {e:?}"))?;
        let next: Vec<i64> = state
            .next_tokens
            .clone()
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| format!("reading the next tokens back: {e:?}"))?;
        let mut top: Vec<(usize, f32)> = weights.into_iter().enumerate().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let shown: Vec<String> = top
            .iter()
            .take(SHOWN)
            .filter(|(_, w)| *w > 0.0)
            .map(|&(slot, w)| {
                let tok = u32::try_from(next[slot]).map_or_else(
                    |_| "?".to_string(),
                    |id| tokenizer.decode(&[id]).unwrap_or_default(),
                );
                format!("{tok:?} {w:.2}")
            })
            .collect();
        let tail = tokenizer.decode(&segment.inputs[segment.inputs.len().saturating_sub(8)..])?;
        println!(
            "segment {:>2}: …{tail:?} → memory: {}",
            segment.index,
            if shown.is_empty() {
                "(empty)".to_string()
            } else {
                shown.join(", ")
            }
        );
        run.write(&step)?;
    }
    let stats = model.memory.stats(run.state()?);
    println!(
        "memory at the end: {:.0}% full, mean effective priority {:.3}",
        100.0 * stats.utilisation,
        stats.mean_effective_priority
    );
    Ok(())
}
