//! CNI_ARGS, CAP_ARGS and the identifier rules.
//! The invariants live in fuzz/src/lib.rs, shared with the engine's property tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cnichain_fuzz::cni_args(data);
});
