//! The shared store (Redis) at the host boundary: the script and how a snapshot reads in
//! JavaScript and Python. Everything else a host does with the store goes through the driver
//! ([`DriverHost`](super::DriverHost)).

use crate::shared::{script_sha1, SCRIPT};

/// The Lua script and its SHA1, as `EVALSHA` names it: `[script, sha]`.
pub fn script() -> [String; 2] {
    [SCRIPT.to_string(), script_sha1().to_string()]
}

/// A store snapshot as the JavaScript hosts read it (times in server milliseconds):
/// `{at, limits: [{name, kind, capacity, used, reserved, available, nextFree, balance, pause:
/// {until, serverUntil, reason, strikes} | null}], waiters}`.
pub(crate) fn snapshot_json(s: &crate::Snapshot) -> serde_json::Value {
    let limits: Vec<serde_json::Value> = s
        .limits
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name, "kind": l.kind, "capacity": l.capacity, "used": l.used, "reserved": l.reserved,
                "available": l.available, "nextFree": l.next_free.map(|t| t.as_millis_f64()), "balance": l.balance,
                "pause": l.pause.as_ref().map(|p| serde_json::json!({
                    "until": p.until.as_millis_f64(), "serverUntil": p.server_until.as_millis_f64(),
                    "reason": p.reason, "strikes": p.strikes,
                })),
            })
        })
        .collect();
    serde_json::json!({ "at": s.at.as_millis_f64(), "limits": limits, "waiters": s.waiting[2] })
}
