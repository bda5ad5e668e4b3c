//! Keys, values and a small random number generator for the workloads.

/// The key numbered `n`: `prefix` followed by `n` in decimal, zero-padded so
/// the whole key is `size` bytes (longer when `size` leaves too little room).
pub fn key(prefix: &str, n: u64, size: usize) -> Vec<u8> {
    let width = size.saturating_sub(prefix.len());
    format!("{prefix}{n:0width$}").into_bytes()
}

/// The first key after every key that starts with `prefix` (etcd's
/// `--prefix` range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the key space.
    vec![0]
}

/// A value of `size` bytes.
pub fn value(size: usize) -> Vec<u8> {
    vec![b'v'; size]
}

/// SplitMix64: fast, seedable, good enough to pick keys.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_to_the_requested_size() {
        assert_eq!(key("k/", 42, 8), b"k/000042");
        assert_eq!(key("", 7, 3), b"007");
    }

    #[test]
    fn keys_grow_past_a_size_too_small_for_the_number() {
        assert_eq!(key("pre/", 12345, 2), b"pre/12345");
    }

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn rng_stays_in_range_and_is_deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert!(x < 10);
            assert_eq!(x, b.below(10));
            let u = a.unit();
            b.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
