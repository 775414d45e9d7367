//! Conflist loading (list and single .conf), request derivation, and the validator on the same bytes.
//! The invariants live in fuzz/src/lib.rs, shared with the engine's property tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cnichain_fuzz::conflist(data);
});
