//! The random wait before each run, so that a fleet's agents do not all
//! converge (and fetch) at the same moment.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A random duration below `max` (zero for zero).
pub fn random_below(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    Duration::from_millis(h.finish() % (max.as_millis() as u64).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splay_stays_below_its_bound() {
        assert!(random_below(Duration::from_secs(2)) < Duration::from_secs(2));
        assert_eq!(random_below(Duration::ZERO), Duration::ZERO);
    }
}
