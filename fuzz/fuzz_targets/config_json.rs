//! `Config::from_json` on arbitrary text: errors are fine, panics are not. A config that parses
//! must also survive `TrafficControl::new` and a JSON round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traffic_control_core::{Config, TrafficControl};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = Config::from_json(text) {
        let _ = Config::from_json(&config.to_json());
        let _ = TrafficControl::new(config);
    }
});
