//! The shared store (Redis) for Node and Bun: the core's host driver ([`host::DriverHost`]) behind
//! one call, the same as the wasm package's. The JavaScript side (`js/src/shared.ts`) keeps its
//! timer, its promises, and runs the script calls with the application's Redis client.

use std::collections::HashMap;

use napi::bindgen_prelude::External;
use napi_derive::napi;
use traffic_control_core::{self as tc, host};

use crate::{config_error, host_error, CodedError};

type DriverHandle = External<host::DriverHost>;

fn driver(config: Result<tc::Config, tc::ConfigError>, options_json: &str) -> Result<DriverHandle, CodedError> {
    let config = config.map_err(|e| config_error(&e))?;
    host::DriverHost::new(config, options_json).map(External::new).map_err(|e| host_error(&e))
}

/// The Lua script and its SHA1: `[script, sha]`.
#[napi]
pub fn shared_script() -> Vec<String> {
    host::script().into()
}

/// A shared store's driver from a config in JSON text; options as JSON (see `DriverHost`).
#[napi]
pub fn driver_create(config_json: String, options_json: String) -> Result<DriverHandle, CodedError> {
    driver(tc::Config::from_json(&config_json), &options_json)
}

/// A shared store's driver from a preset, with overrides from `env`.
#[napi]
pub fn driver_create_from_preset(
    name: String,
    env: HashMap<String, String>,
    options_json: String,
) -> Result<DriverHandle, CodedError> {
    driver(tc::Preset::named(&name).and_then(|p| p.config_with_env(env)), &options_json)
}

/// One input (JSON) at `now`: `{result, outputs, timeout, waiting}` as JSON text.
#[napi]
pub fn driver_step(h: &mut DriverHandle, now: f64, input_json: String) -> Result<String, CodedError> {
    h.step(now, &input_json).map_err(|e| host_error(&e))
}

/// Runs a config in memory beside this driver's traffic as a shadow (JSON text), or stops it
/// (none). An invalid config throws `CONFIG` naming the field and leaves the running shadow.
#[napi]
pub fn driver_set_shadow(h: &mut DriverHandle, now: f64, config_json: Option<String>) -> Result<(), CodedError> {
    let config = match config_json {
        Some(json) => Some(tc::Config::from_json(&json).map_err(|e| config_error(&e))?),
        None => None,
    };
    h.driver().set_shadow(tc::Timestamp::from_millis_f64(now), config).map_err(|e| config_error(&e))
}

/// The same with a shipped preset and overrides read from `env` under its prefix.
#[napi]
pub fn driver_set_shadow_preset(
    h: &mut DriverHandle,
    now: f64,
    name: String,
    env: HashMap<String, String>,
) -> Result<(), CodedError> {
    let config = tc::Preset::named(&name).and_then(|p| p.config_with_env(env)).map_err(|e| config_error(&e))?;
    h.driver().set_shadow(tc::Timestamp::from_millis_f64(now), Some(config)).map_err(|e| config_error(&e))
}

/// What the shadow would have decided beside what the store decided for this driver's requests,
/// as JSON text (the core's `ShadowReport`); none without a shadow.
#[napi]
pub fn driver_shadow_report_json(h: &mut DriverHandle, now: f64) -> Option<String> {
    h.driver().shadow_report(tc::Timestamp::from_millis_f64(now)).map(|r| r.to_json())
}
