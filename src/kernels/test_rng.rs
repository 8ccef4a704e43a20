//! Deterministic test data for the kernel unit tests (splitmix64).

/// An endless splitmix64 sequence from `seed`.
pub(super) fn splitmix(seed: u64) -> impl Iterator<Item = u64> {
    let mut s = seed;
    std::iter::repeat_with(move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// `n` deterministic bytes.
pub(super) fn bytes(n: usize, seed: u64) -> Vec<u8> {
    splitmix(seed).take(n).map(|z| (z >> 56) as u8).collect()
}

/// `n` deterministic values in [-1, 1).
pub(super) fn values(n: usize, seed: u64) -> Vec<f32> {
    splitmix(seed)
        .take(n)
        .map(|z| ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        .collect()
}
