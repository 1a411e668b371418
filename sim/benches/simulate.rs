//! The simulator's speed: ten minutes of Back Market traffic (the `backmarket` workload against
//! the `backmarket` server model, with the `backmarket` preset). Prints simulated requests per
//! second of wall time besides criterion's figure.

use criterion::{criterion_group, criterion_main, Criterion};
use traffic_control_sim::{config_from, simulate, spec};

fn ten_minutes_of_backmarket(c: &mut Criterion) {
    let workload = spec::workload_from("backmarket", None).expect("preset");
    let server = spec::server_from("backmarket", None).expect("preset");
    let config = config_from("backmarket", None, &[]).expect("preset");
    let went = simulate(vec![config.clone()], &workload, Some(&server)).expect("runs").runs[0].0.went;
    let mut group = c.benchmark_group("simulate");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(went));
    group.bench_function("backmarket_10min", |b| {
        b.iter(|| simulate(vec![config.clone()], &workload, Some(&server)).expect("runs"))
    });
    group.finish();
}

criterion_group!(benches, ten_minutes_of_backmarket);
criterion_main!(benches);
