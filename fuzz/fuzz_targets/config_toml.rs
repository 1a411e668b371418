//! `Config::from_toml` on arbitrary text: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traffic_control_core::{Config, TrafficControl};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = Config::from_toml(text) {
        let _ = TrafficControl::new(config);
    }
});
