//! Next-run computation across time zones and daylight-saving changes.

use chrono::{DateTime, TimeZone, Utc};
use kars_backup_schedule::{Error, Schedule};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

#[test]
fn daily_at_two_in_utc_and_other_zones() {
    let after = utc(2024, 7, 1, 12, 0);
    let cases = [
        ("UTC", utc(2024, 7, 2, 2, 0)),
        ("Europe/Berlin", utc(2024, 7, 2, 0, 0)), // CEST, UTC+2
        ("America/New_York", utc(2024, 7, 2, 6, 0)), // EDT, UTC-4
        ("Asia/Kolkata", utc(2024, 7, 1, 20, 30)), // IST, UTC+5:30: 02:00 on 2 July
        ("Australia/Sydney", utc(2024, 7, 1, 16, 0)), // AEST, UTC+10
    ];
    for (tz, expected) in cases {
        let s = Schedule::parse("0 2 * * *", tz).unwrap();
        assert_eq!(s.next_after(after), Some(expected), "{tz}");
    }
}

#[test]
fn next_after_is_strict_and_upcoming_is_ordered() {
    let s = Schedule::parse("*/15 * * * *", "UTC").unwrap();
    let at = utc(2024, 1, 1, 10, 15);
    assert_eq!(s.next_after(at), Some(utc(2024, 1, 1, 10, 30)));
    assert_eq!(s.previous_at_or_before(at), Some(at));
    assert_eq!(
        s.upcoming(at, 3),
        vec![
            utc(2024, 1, 1, 10, 30),
            utc(2024, 1, 1, 10, 45),
            utc(2024, 1, 1, 11, 0)
        ]
    );
}

#[test]
fn spring_forward_gap_runs_once_right_after_the_gap() {
    // Europe/Berlin, 2024-03-31: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
    let runs = s.upcoming(utc(2024, 3, 29, 12, 0), 4);
    assert_eq!(
        runs,
        vec![
            utc(2024, 3, 30, 1, 30), // 02:30 CET
            utc(2024, 3, 31, 1, 0),  // 03:00 CEST, right after the gap
            utc(2024, 4, 1, 0, 30),  // 02:30 CEST
            utc(2024, 4, 2, 0, 30),
        ]
    );
    // America/New_York, 2024-03-10: 02:00 EST jumps to 03:00 EDT.
    let ny = Schedule::parse("0 2 * * *", "America/New_York").unwrap();
    assert_eq!(
        ny.upcoming(utc(2024, 3, 9, 12, 0), 2),
        vec![utc(2024, 3, 10, 7, 0), utc(2024, 3, 11, 6, 0)] // 03:00 EDT, then 02:00 EDT
    );
}

#[test]
fn fall_back_overlap_runs_a_fixed_time_once() {
    // Europe/Berlin, 2024-10-27: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
    assert_eq!(
        s.upcoming(utc(2024, 10, 26, 12, 0), 2),
        vec![
            utc(2024, 10, 27, 0, 30), // 02:30 CEST, the first pass only
            utc(2024, 10, 28, 1, 30), // 02:30 CET next day
        ]
    );
    // A run that just happened in the first pass does not run again in the second.
    assert_eq!(
        s.next_after(utc(2024, 10, 27, 0, 30)),
        Some(utc(2024, 10, 28, 1, 30))
    );
}

#[test]
fn fall_back_overlap_runs_interval_jobs_in_both_passes() {
    // Every 30 minutes: the repeated hour 02:00-03:00 yields 02:00, 02:30 twice (4 runs).
    let s = Schedule::parse("*/30 * * * *", "Europe/Berlin").unwrap();
    let runs = s.upcoming(utc(2024, 10, 26, 23, 45), 6);
    assert_eq!(
        runs,
        vec![
            utc(2024, 10, 27, 0, 0),  // 02:00 CEST
            utc(2024, 10, 27, 0, 30), // 02:30 CEST
            utc(2024, 10, 27, 1, 0),  // 02:00 CET
            utc(2024, 10, 27, 1, 30), // 02:30 CET
            utc(2024, 10, 27, 2, 0),  // 03:00 CET
            utc(2024, 10, 27, 2, 30),
        ]
    );
}

#[test]
fn nicknames_and_weekdays() {
    let daily = Schedule::parse("@daily", "Europe/London").unwrap();
    // 2024-07-01 is in BST (UTC+1): midnight local is 23:00 UTC the day before.
    assert_eq!(
        daily.next_after(utc(2024, 7, 1, 12, 0)),
        Some(utc(2024, 7, 1, 23, 0))
    );
    let weekly = Schedule::parse("0 3 * * SUN", "UTC").unwrap();
    // 2024-07-01 is a Monday.
    assert_eq!(
        weekly.next_after(utc(2024, 7, 1, 0, 0)),
        Some(utc(2024, 7, 7, 3, 0))
    );
    assert_eq!(daily.expression(), "@daily");
    assert_eq!(daily.time_zone().name(), "Europe/London");
    assert_eq!(daily.to_string(), "@daily (Europe/London)");
}

#[test]
fn bad_expressions_and_zones_are_refused_with_clear_errors() {
    for expr in [
        "0 2 * *",
        "0 0 2 * * *",
        "61 2 * * *",
        "0 2 * * FOO",
        "",
        "@sometimes",
    ] {
        let err = Schedule::parse(expr, "UTC").unwrap_err();
        assert!(matches!(err, Error::InvalidCron { .. }), "{expr}: {err}");
        assert!(err.to_string().contains("5 fields"), "{err}");
    }
    let never = Schedule::parse("0 0 30 2 *", "UTC").unwrap_err();
    assert!(never.to_string().contains("never matches"), "{never}");
    let tz = Schedule::parse("0 2 * * *", "Mars/Olympus").unwrap_err();
    assert!(matches!(tz, Error::InvalidTimeZone { .. }));
    assert!(tz.to_string().contains("IANA"), "{tz}");
}
