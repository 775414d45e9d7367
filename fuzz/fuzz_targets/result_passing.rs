//! A plugin's result of any version (first byte: the config's version), converted to every version and back and threaded into the next request.
//! The invariants live in fuzz/src/lib.rs, shared with the engine's property tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cnichain_fuzz::result_passing(data);
});
