//! SplitMix64 (Steele, Lea & Flood 2014), the project's one deterministic generator: a tiny,
//! fully specified mix, so that a seed means the same shuffle, weights and noise forever.
//!
//! ```
//! use hippo_data::seed::{SplitMix64, splitmix64};
//! let mut rng = SplitMix64(7);
//! // The stream's first value is the mix of its seed.
//! assert_eq!(rng.next_u64(), splitmix64(7));
//! let mut v = [1, 2, 3, 4, 5];
//! SplitMix64(1).shuffle(&mut v);
//! v.sort();
//! assert_eq!(v, [1, 2, 3, 4, 5]);
//! ```

/// The generator; its state is the `u64` it holds (saved in a batcher's resume state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next value: the state advances by the golden-ratio increment, then is mixed.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`) by multiply-shift; bias below 2⁻³² for corpus sizes.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The first value of the stream seeded with `z`: a one-shot mix of a seed (for deriving
/// independent seeds, e.g. `splitmix64(seed ^ splitmix64(step))`).
pub fn splitmix64(z: u64) -> u64 {
    SplitMix64(z).next_u64()
}
