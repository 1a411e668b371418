//! Environment overrides on every preset: arbitrary `NAME=value` lines (names under the preset's
//! prefix most of the time) must give a config or an error naming the variable, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traffic_control_core::{TrafficControl, PRESETS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for preset in PRESETS {
        let env: Vec<(String, String)> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (format!("{}_{}", preset.env_prefix, name), value.to_string()))
            .collect();
        if let Ok(config) = preset.config_with_env(env) {
            let _ = TrafficControl::new(config);
        }
    }
});
