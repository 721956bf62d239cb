//! Data parallel: one micro-batch's streams split into contiguous shards, one per device.
//!
//! Each shard runs on its own replica ([`HippoFormer::replica`]: running statistics off) with
//! its own streams' memory; the shard gradients move to the main device and are summed weighted
//! by each shard's share of the targets (DDP semantics: auxiliary losses are per shard), and
//! the drift calibrator's running statistics are updated once, from the whole batch
//! ([`hippo_drift::DriftCalibrator::observe`]), so replicas follow the single-device run.
//! Distinct devices run in one thread each; a repeated device (`cpu,cpu`) runs its shards one
//! after the other, because Burn's autodiff graph cannot be built from two threads over shared
//! parameter leaves.

use std::ops::Range;
use std::path::PathBuf;

use burn::optim::GradientsAccumulator;
use burn::tensor::{Device, Tensor};
use hippo_data::SegmentBatch;
use hippo_memory::MemoryState;
use hippo_model::HippoFormer;

use super::{Result, ShardOut, StepSums, TrainError, shard_step};

/// Contiguous row ranges of `n` shards of `b` rows (sizes differ by at most one).
pub(super) fn shard_rows(b: usize, n: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n).map(move |k| (k * b / n)..((k + 1) * b / n))
}

/// The devices of a run and each shard's memory between micro-batches.
pub(super) struct Shards {
    /// The devices, the main (autodiff) one first.
    pub devices: Vec<Device>,
    /// Whether no device repeats (then shards run in threads).
    pub distinct: bool,
    /// Each shard's streams' memory, on its device.
    pub mems: Vec<MemoryState>,
}

impl Shards {
    /// Splits the memory `mem` of `b` streams over `devices`.
    pub fn new(devices: Vec<Device>, mem: &MemoryState, b: usize) -> Self {
        let distinct = devices
            .iter()
            .enumerate()
            .all(|(i, d)| !devices[..i].contains(d));
        let mems = shard_rows(b, devices.len())
            .zip(&devices)
            .map(|(r, d)| mem.rows(r, d))
            .collect();
        Self {
            devices,
            distinct,
            mems,
        }
    }

    /// The whole memory, on the main device.
    pub fn joined(&self) -> MemoryState {
        MemoryState::cat(&self.mems, &self.devices[0])
    }

    /// Forward, loss, backward and commit of one micro-batch over the shards; the gradients
    /// are accumulated into `accum` (on the main device) and the values into `sums`.
    #[allow(clippy::too_many_arguments)]
    pub fn micro_batch(
        &mut self,
        model: &mut HippoFormer,
        batch: &SegmentBatch,
        step: usize,
        last_checkpoint: &Option<PathBuf>,
        sums: &mut StepSums,
        accum: &mut GradientsAccumulator<HippoFormer>,
    ) -> Result<()> {
        let ad = self.devices[0].clone();
        // Running statistics are updated once, below, from the whole batch.
        let replicas: Vec<HippoFormer> = self.devices.iter().map(|d| model.replica(d)).collect();
        let b = batch.batch_size();
        let targets = batch.num_targets().max(1) as f64;
        let real = batch.num_valid().max(1) as f64;
        let shards: Vec<SegmentBatch> = shard_rows(b, self.devices.len())
            .map(|r| batch.rows(r))
            .collect();
        let mems = std::mem::take(&mut self.mems);
        let weights: Vec<f64> = shards
            .iter()
            .map(|sb| sb.num_targets() as f64 / targets)
            .collect();
        let devices = &self.devices;
        let lc = last_checkpoint;
        let results: Vec<Result<ShardOut>> = if self.distinct {
            // One thread per device; each replica has its own autodiff graph.
            std::thread::scope(|scope| {
                let handles: Vec<_> = shards
                    .iter()
                    .zip(&replicas)
                    .zip(mems)
                    .zip(devices)
                    .zip(&weights)
                    .map(|((((sb, rep), m), d), &w)| {
                        scope.spawn(move || shard_step(rep, sb, m, d, Some(w), step, lc))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(TrainError::Options(
                                "a data-parallel worker thread panicked".into(),
                            ))
                        })
                    })
                    .collect()
            })
        } else {
            // Replicas on a shared device share their parameters' autodiff leaves, and Burn's
            // autodiff graph cannot be built from two threads over shared leaves: run the
            // shards one after the other (same arithmetic).
            shards
                .iter()
                .zip(&replicas)
                .zip(mems)
                .zip(devices)
                .zip(&weights)
                .map(|((((sb, rep), m), d), &w)| shard_step(rep, sb, m, d, Some(w), step, lc))
                .collect()
        };
        let mut observed = Vec::new();
        for (r, sb) in results.into_iter().zip(&shards) {
            let mut out = r?;
            if let Some((h, v)) = out.observed.take() {
                observed.push((h.to_device(&ad), v.to_device(&ad)));
            }
            sums.add(
                &out,
                sb.num_targets() as f64 / targets,
                sb.num_valid() as f64 / real,
            );
            accum.accumulate(model, out.grads.to_device(&ad, model));
            self.mems.push(out.mem);
        }
        if model.config.drift && !observed.is_empty() {
            let (h, v): (Vec<_>, Vec<_>) = observed.into_iter().unzip();
            model
                .drift
                .observe(Tensor::cat(h, 0), Tensor::cat(v, 0))
                .map_err(|e| TrainError::Model(e.into()))?;
        }
        Ok(())
    }
}
