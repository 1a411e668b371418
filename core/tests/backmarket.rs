//! The Back Market probe workload with the seed's safe limits (global 150/10 s, catalog 15/10 s,
//! competitor 2/1 s, care 300/60 s): 100 Dip -> Peek -> Peak probes, a flood of LOW scans, care
//! reads and a few CRITICAL reverts, simulated in fake time by the demo's own host loop.

#[allow(dead_code)]
#[path = "../examples/demo.rs"]
mod demo;

#[test]
fn probes_with_a_low_flood_and_critical_reverts() {
    let (sim, wakeups) = demo::simulate(false);
    // No window exceeded, checked from the Go instants, independently of the core.
    for (l, &(name, max, per)) in demo::LIMITS.iter().enumerate() {
        let mut goes = sim.admitted[l].clone();
        goes.sort_unstable();
        let peak = demo::peak_in_window(&goes, per);
        assert!(peak <= max, "{name}: {peak} admissions in one window > {max}");
    }
    // The catalog limit is the bottleneck and runs at its ceiling.
    assert_eq!(demo::peak_in_window(&sim.admitted[demo::CATALOG], 10 * demo::SEC), 15);
    // Every probe completes and every Peak goes without waiting on capacity.
    assert_eq!(sim.probes_done(), demo::PROBES);
    assert!(sim.peaks_waited.is_empty(), "Peaks that waited: {:?}", sim.peaks_waited);
    assert_eq!(sim.reservations_expired, 0);
    // The CRITICAL reverts all went, none waited longer than the catalog takes to free a unit.
    assert_eq!(sim.revert_goes.len(), demo::REVERTS_AT.len());
    let worst = sim.kind_waits["revert"].iter().max().copied().unwrap_or(0);
    assert!(worst < 2 * demo::SEC, "a revert waited {worst} ns");
    // The host never spun on a timeout that named the past.
    assert_eq!(wakeups.stuck_timeouts, 0);
}
