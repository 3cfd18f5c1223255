//! Property tests of the grandfather-father-son policy (restic `forget` semantics).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use kars_backup_core::retention::{KeepCount, RetentionItem};
use kars_backup_core::{KeepRules, RetentionPolicy};
use proptest::prelude::*;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 12, 20, 0, 0, 0).unwrap()
}

/// Histories of up to 80 backups spread over ~3 years, with duplicate times possible.
fn history() -> impl Strategy<Value = Vec<RetentionItem>> {
    prop::collection::vec((0i64..3 * 365 * 24, 0u8..3), 0..80).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (hours, dup))| RetentionItem {
                // `dup` makes some times identical.
                name: format!("b{i:03}"),
                time: base() + Duration::hours(if dup == 0 { hours - hours % 24 } else { hours }),
                tiers: vec![],
                size: 1,
            })
            .collect()
    })
}

fn rules() -> impl Strategy<Value = KeepRules> {
    let count = prop_oneof![(0u32..6).prop_map(KeepCount::Last), Just(KeepCount::All)];
    (
        prop::option::of(0u32..5),
        prop::option::of(count.clone()),
        prop::option::of(count.clone()),
        prop::option::of(count.clone()),
        prop::option::of(count),
    )
        .prop_map(|(last, daily, weekly, monthly, yearly)| KeepRules {
            last,
            daily,
            weekly,
            monthly,
            yearly,
            ..KeepRules::default()
        })
}

/// A bucket key function of a calendar rule.
type BucketKey = Box<dyn Fn(DateTime<Utc>) -> i64>;

fn now() -> DateTime<Utc> {
    base() + Duration::days(3 * 365 + 10)
}

fn kept(rules: &KeepRules, items: &[RetentionItem]) -> BTreeSet<String> {
    rules
        .plan(items, now())
        .keep
        .into_iter()
        .map(|k| k.item.name)
        .collect()
}

/// Newest first, ties by name descending: the order the policy documents.
fn newest_first(items: &[RetentionItem]) -> Vec<&RetentionItem> {
    let mut v: Vec<&RetentionItem> = items.iter().collect();
    v.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    v
}

/// The reference: the newest backup of each of the N most recent non-empty buckets.
fn reference(
    items: &[RetentionItem],
    n: KeepCount,
    key: impl Fn(DateTime<Utc>) -> i64,
) -> BTreeSet<String> {
    let mut buckets: BTreeMap<i64, &RetentionItem> = BTreeMap::new();
    for item in newest_first(items) {
        buckets.entry(key(item.time)).or_insert(item);
    }
    let take = match n {
        KeepCount::Last(n) => n as usize,
        KeepCount::All => usize::MAX,
    };
    buckets
        .values()
        .rev()
        .take(take)
        .map(|i| i.name.clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn newest_is_always_kept(items in history(), rules in rules()) {
        if let Some(newest) = newest_first(&items).first() {
            prop_assert!(kept(&rules, &items).contains(&newest.name));
        }
    }

    #[test]
    fn every_item_is_in_exactly_one_list(items in history(), rules in rules()) {
        let plan = rules.plan(&items, now());
        prop_assert_eq!(plan.keep.len() + plan.delete.len(), items.len());
        let k: BTreeSet<_> = plan.keep.iter().map(|k| &k.item.name).collect();
        prop_assert!(plan.delete.iter().all(|d| !k.contains(&d.name)));
    }

    #[test]
    fn each_rule_keeps_the_newest_of_its_most_recent_buckets(items in history(), n in (1u32..6).prop_map(KeepCount::Last)) {
        let checks: Vec<(KeepRules, BucketKey)> = vec![
            (KeepRules { daily: Some(n), ..KeepRules::default() }, Box::new(|t: DateTime<Utc>| t.timestamp().div_euclid(86_400))),
            (KeepRules { weekly: Some(n), ..KeepRules::default() }, Box::new(|t: DateTime<Utc>| { let w = t.iso_week(); i64::from(w.year()) * 100 + i64::from(w.week()) })),
            (KeepRules { monthly: Some(n), ..KeepRules::default() }, Box::new(|t: DateTime<Utc>| i64::from(t.year()) * 12 + i64::from(t.month0()))),
            (KeepRules { yearly: Some(n), ..KeepRules::default() }, Box::new(|t: DateTime<Utc>| i64::from(t.year()))),
        ];
        for (rules, key) in checks {
            let mut expected = reference(&items, n, key);
            if let Some(newest) = newest_first(&items).first() {
                expected.insert(newest.name.clone());
            }
            prop_assert_eq!(kept(&rules, &items), expected);
        }
    }

    #[test]
    fn the_plan_does_not_depend_on_input_order(items in history(), rules in rules(), seed in any::<u64>()) {
        let mut shuffled = items.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(rules.plan(&items, now()), rules.plan(&shuffled, now()));
    }

    #[test]
    fn applying_a_plan_then_planning_again_deletes_nothing(items in history(), rules in rules()) {
        let plan = rules.plan(&items, now());
        let survivors: Vec<RetentionItem> = plan.keep.into_iter().map(|k| k.item).collect();
        prop_assert!(rules.plan(&survivors, now()).delete.is_empty());
    }

    #[test]
    fn raising_a_count_never_deletes_more(items in history(), rules in rules(), which in 0usize..5) {
        let bump = |c: Option<KeepCount>| Some(match c {
            None => KeepCount::Last(1),
            Some(KeepCount::Last(n)) => KeepCount::Last(n + 1),
            Some(KeepCount::All) => KeepCount::All,
        });
        let mut more = rules.clone();
        match which {
            0 => more.last = Some(rules.last.unwrap_or(0) + 1),
            1 => more.daily = bump(rules.daily),
            2 => more.weekly = bump(rules.weekly),
            3 => more.monthly = bump(rules.monthly),
            _ => more.yearly = bump(rules.yearly),
        }
        prop_assert!(kept(&rules, &items).is_subset(&kept(&more, &items)));
    }
}

/// Table-driven calendar edges: UTC day boundaries, year boundaries, ISO week 53.
#[test]
fn calendar_boundaries() {
    let item = |name: &str, t: DateTime<Utc>| RetentionItem {
        name: name.into(),
        time: t,
        tiers: vec![],
        size: 1,
    };
    let t = |y, m, d, h, mi, s| Utc.with_ymd_and_hms(y, m, d, h, mi, s).unwrap();
    let cases: Vec<(&str, Vec<RetentionItem>, Vec<&str>)> = vec![
        (
            "daily=2: 23:59:59 and 00:00:00 are different UTC days",
            vec![
                item("a", t(2024, 3, 9, 23, 59, 59)),
                item("b", t(2024, 3, 10, 0, 0, 0)),
                item("c", t(2024, 3, 10, 12, 0, 0)),
            ],
            vec!["a", "c"],
        ),
        (
            "yearly=2: Dec 31 and Jan 1 are different years",
            vec![
                item("a", t(2024, 12, 31, 23, 0, 0)),
                item("b", t(2025, 1, 1, 1, 0, 0)),
                item("c", t(2024, 6, 1, 0, 0, 0)),
            ],
            vec!["a", "b"],
        ),
        (
            "weekly=2: 2020-W53 (Dec 28 2020 - Jan 3 2021) is one week across the year boundary",
            vec![
                item("a", t(2020, 12, 28, 1, 0, 0)),
                item("b", t(2021, 1, 3, 23, 0, 0)),
                item("c", t(2021, 1, 4, 0, 0, 0)),
                item("d", t(2020, 12, 27, 0, 0, 0)),
            ],
            vec!["b", "c"],
        ),
        (
            "monthly=2: months with no backup use no slot",
            vec![
                item("a", t(2024, 1, 31, 0, 0, 0)),
                item("b", t(2024, 5, 1, 0, 0, 0)),
                item("c", t(2023, 12, 1, 0, 0, 0)),
            ],
            vec!["a", "b"],
        ),
    ];
    let policies = ["daily=2", "yearly=2", "weekly=2", "monthly=2"];
    for ((label, items, expected), policy) in cases.into_iter().zip(policies) {
        let rules: KeepRules = policy.parse().unwrap();
        let got = kept(&rules, &items);
        let expected: BTreeSet<String> = expected.into_iter().map(String::from).collect();
        assert_eq!(got, expected, "{label}");
    }
    // The week-53 bucket is labelled as such.
    let plan = KeepRules {
        weekly: Some(KeepCount::Last(1)),
        ..KeepRules::default()
    }
    .plan(&[item("x", t(2021, 1, 2, 0, 0, 0))], t(2021, 1, 5, 0, 0, 0));
    assert!(
        plan.keep[0]
            .reasons
            .contains(&"weekly 1 of 1 (2020-W53)".to_string()),
        "{:?}",
        plan.keep[0].reasons
    );
}
