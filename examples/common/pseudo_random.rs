//! Deterministic pseudo-random inputs shared by the benchmark example and the tests (no `rand` dependency).

/// `n` floats uniform in [-1, 1) from a xorshift generator seeded with `seed`: well-conditioned inputs that are
/// the same on every run and machine.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
