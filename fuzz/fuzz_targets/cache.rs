//! Result-cache files: engine cache::parse_entry, the cached result as CHECK/DEL use it, and a write-back round trip.
//! The invariants live in fuzz/src/lib.rs, shared with the engine's property tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cnichain_fuzz::cache(data);
});
