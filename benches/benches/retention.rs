//! Retention planning over 1,000,000 backups (target: under 1 s).

use std::hint::black_box;

use chrono::{Duration, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use kars_backup_core::retention::RetentionItem;
use kars_backup_core::{KeepRules, RetentionPolicy};

fn history(n: usize) -> Vec<RetentionItem> {
    // One backup every 5 minutes, ~9.5 years, newest last (the order a listing has).
    let start = Utc.with_ymd_and_hms(2016, 1, 1, 0, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            let time = start + Duration::minutes(5 * i as i64);
            RetentionItem {
                name: format!("asset-data-{}.tar.gz", time.format("%Y%m%d-%H%M%S")),
                time,
                tiers: vec![],
                size: 1,
            }
        })
        .collect()
}

fn plan_million(c: &mut Criterion) {
    let items = history(1_000_000);
    let now = items.last().unwrap().time + Duration::hours(1);
    let runbook = KeepRules::runbook();
    let everything: KeepRules =
        "last=10,hourly=48,daily=7,weekly=4,monthly=12,yearly=all,within=2d"
            .parse()
            .unwrap();
    let mut group = c.benchmark_group("retention");
    group.sample_size(10);
    group.bench_function("plan 1M backups, runbook policy", |b| {
        b.iter(|| black_box(runbook.plan(black_box(&items), now)))
    });
    group.bench_function("plan 1M backups, every rule", |b| {
        b.iter(|| black_box(everything.plan(black_box(&items), now)))
    });
    group.finish();
}

criterion_group!(benches, plan_million);
criterion_main!(benches);
