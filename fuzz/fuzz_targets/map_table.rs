//! Fuzz target: see `switchyard::fuzzing::map_table`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::map_table(data));
