//! The `ferrocd` binary allocates with mimalloc (see `main.rs`): under
//! 1000 writers glibc's malloc and free took about a third of the
//! server's CPU (arena locks, chunk splitting and coalescing); with
//! mimalloc the same puts cost the server 13% less CPU (bench/RESULTS.md,
//! "The allocator").
//!
//! Two of mimalloc's defaults are changed. It advises the kernel to back
//! its regions with transparent huge pages: off at build time (the
//! `no_thp` feature), since with THP in `madvise` mode, Debian's default,
//! a member holding 1M keys had 346 MiB resident instead of 271 MiB. And
//! it gives freed memory back to the system a second after it is freed,
//! so a member idle after a burst kept tens of MiB it no longer used;
//! [`tune`] sets that delay to 250 ms. Not shorter: at 10 ms, under 1000
//! writers, memory went back and was faulted in again all the time (8910
//! `madvise` calls and 139k page faults per 100k puts, against 2391 and
//! 56k at 250 ms) for about 20% more server CPU, and a member's resident
//! memory after writing 1M keys, or after a restart with them, came out
//! the same (bench/RESULTS.md, "mimalloc's purge delay").

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// mimalloc's `mi_option_purge_delay` (libmimalloc-sys does not name it).
const PURGE_DELAY: mi_option_t = 15;

/// Milliseconds before freed memory is given back to the system.
pub const PURGE_DELAY_MS: i64 = 250;

/// Sets mimalloc's options (a `MIMALLOC_PURGE_DELAY` in the environment,
/// which mimalloc reads itself, is left to rule); call first thing in
/// `main`, before any other thread exists (mimalloc's option setters are
/// not thread-safe).
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: called before other threads start (see above); the option
    // is an integer.
    unsafe { mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
}

/// The purge delay in effect.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reading an integer option.
    unsafe { mi_option_get(PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        // The purge delay is the option whose default is 1000 ms in the
        // mimalloc this is built with (a renumbered enum would fail here).
        let default = purge_delay_ms();
        assert_eq!(default, 1000, "option {PURGE_DELAY} is not the purge delay");
        tune();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
    }
}
