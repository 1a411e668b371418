//! The shared store (Redis) for Workers and Node: the core's host driver ([`host::DriverHost`])
//! behind one call, the same functions (names, arguments, results) as the napi addon's. The
//! JavaScript side (`js/src/shared.ts`) keeps its timer, its promises, and runs the script calls
//! with the application's Redis client.

use js_sys::Object;
use traffic_control_core::{self as tc, host};
use wasm_bindgen::prelude::*;

use crate::{config_error, env_vars, host_error};

/// The core's shared-store driver, held by JavaScript as an opaque handle.
#[wasm_bindgen]
pub struct SharedDriver(host::DriverHost);

fn driver(config: Result<tc::Config, tc::ConfigError>, options_json: &str) -> Result<SharedDriver, JsValue> {
    let config = config.map_err(|e| config_error(&e))?;
    host::DriverHost::new(config, options_json).map(SharedDriver).map_err(|e| host_error(&e))
}

/// The Lua script and its SHA1: `[script, sha]`.
#[wasm_bindgen(js_name = sharedScript)]
pub fn shared_script() -> Vec<String> {
    host::script().into()
}

/// A shared store's driver from a config in JSON text; options as JSON (see `DriverHost`).
#[wasm_bindgen(js_name = driverCreate)]
pub fn driver_create(config_json: &str, options_json: &str) -> Result<SharedDriver, JsValue> {
    driver(tc::Config::from_json(config_json), options_json)
}

/// A shared store's driver from a preset, with overrides from `env` (an object of strings).
#[wasm_bindgen(js_name = driverCreateFromPreset)]
pub fn driver_create_from_preset(name: &str, env: &Object, options_json: &str) -> Result<SharedDriver, JsValue> {
    driver(tc::Preset::named(name).and_then(|p| p.config_with_env(env_vars(env))), options_json)
}

/// One input (JSON) at `now`: `{result, outputs, timeout, waiting}` as JSON text.
#[wasm_bindgen(js_name = driverStep)]
pub fn driver_step(h: &mut SharedDriver, now: f64, input_json: &str) -> Result<String, JsValue> {
    h.0.step(now, input_json).map_err(|e| host_error(&e))
}

/// Runs a config in memory beside this driver's traffic as a shadow (JSON text), or stops it
/// (`null`). Not in the browser build (its size is budgeted).
#[cfg(feature = "shadow")]
#[wasm_bindgen(js_name = driverSetShadow)]
pub fn driver_set_shadow(h: &mut SharedDriver, now: f64, config_json: Option<String>) -> Result<(), JsValue> {
    let config = match config_json {
        Some(json) => Some(tc::Config::from_json(&json).map_err(|e| config_error(&e))?),
        None => None,
    };
    h.0.driver().set_shadow(tc::Timestamp::from_millis_f64(now), config).map_err(|e| config_error(&e))
}

/// The same with a shipped preset and overrides read from `env` under its prefix.
#[cfg(feature = "shadow")]
#[wasm_bindgen(js_name = driverSetShadowPreset)]
pub fn driver_set_shadow_preset(h: &mut SharedDriver, now: f64, name: &str, env: &Object) -> Result<(), JsValue> {
    let config =
        tc::Preset::named(name).and_then(|p| p.config_with_env(env_vars(env))).map_err(|e| config_error(&e))?;
    h.0.driver().set_shadow(tc::Timestamp::from_millis_f64(now), Some(config)).map_err(|e| config_error(&e))
}

/// The shadow's report as JSON text (the core's `ShadowReport`); none without a shadow.
#[cfg(feature = "shadow")]
#[wasm_bindgen(js_name = driverShadowReportJson)]
pub fn driver_shadow_report_json(h: &mut SharedDriver, now: f64) -> Option<String> {
    h.0.driver().shadow_report(tc::Timestamp::from_millis_f64(now)).map(|r| r.to_json())
}
