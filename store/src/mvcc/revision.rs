//! Revisions: the (main, sub) pair that orders every change in the store.

/// A point in the store's history. `main` is the revision of one write
/// transaction; `sub` orders the changes inside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// Length of an encoded revision.
pub const REVISION_LEN: usize = 16;

impl Revision {
    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// Big-endian encoding, so byte order equals revision order for the
    /// non-negative revisions the store uses.
    pub fn to_bytes(self) -> [u8; REVISION_LEN] {
        let mut out = [0u8; REVISION_LEN];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    /// Decodes [`Revision::to_bytes`]; `None` when the slice has the wrong length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != REVISION_LEN {
            return None;
        }
        let main = i64::from_be_bytes(bytes[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(bytes[8..].try_into().ok()?);
        Some(Revision { main, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encoding_round_trips_and_keeps_order(a in 0i64..i64::MAX, b in 0i64..i64::MAX, c in 0i64..i64::MAX, d in 0i64..i64::MAX) {
            let x = Revision::new(a, b);
            let y = Revision::new(c, d);
            prop_assert_eq!(Revision::from_bytes(&x.to_bytes()), Some(x));
            prop_assert_eq!(x.cmp(&y), x.to_bytes().cmp(&y.to_bytes()));
        }
    }

    #[test]
    fn wrong_length_is_rejected() {
        assert_eq!(Revision::from_bytes(&[0u8; 15]), None);
    }
}
