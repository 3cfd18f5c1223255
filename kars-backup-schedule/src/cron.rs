//! Cron expressions evaluated in an IANA time zone, and their systemd `OnCalendar=` form.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, CronComponent};

use crate::error::{Error, Result};

/// A cron schedule: a 5-field expression (`minute hour day-of-month month day-of-week`, e.g.
/// `0 2 * * *`) or a nickname (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`),
/// evaluated in an IANA time zone.
///
/// Daylight-saving changes follow Vixie cron (croner's documented behaviour):
/// - a fixed time that falls into a spring-forward gap (02:30 on the night clocks jump from
///   02:00 to 03:00) runs once, right after the gap (03:00);
/// - a fixed time inside a fall-back overlap (01:30 when 01:00–02:00 happens twice) runs once,
///   at its first occurrence;
/// - wildcard/step fields (`*/15 * * * *`) run at every matching wall-clock time, so they run in
///   both passes of a repeated hour and not at all in a skipped one.
///
/// All instants in and out are UTC. Only standard cron syntax is accepted (croner's `L`, `W`,
/// `#` and `+` are refused), so every schedule is also a crontab line and a systemd timer
/// ([`Schedule::on_calendar`]). `"0 2 * * *".parse::<Schedule>()` reads an expression in UTC.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use kars_backup_schedule::Schedule;
///
/// let daily = Schedule::parse("0 2 * * *", "Europe/Berlin").unwrap();
/// let next = daily.next_after(Utc.with_ymd_and_hms(2024, 7, 1, 12, 0, 0).unwrap()).unwrap();
/// assert_eq!(next, Utc.with_ymd_and_hms(2024, 7, 2, 0, 0, 0).unwrap()); // 02:00 CEST
/// ```
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    tz: Tz,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("expression", &self.expression)
            .field("time_zone", &self.tz.name())
            .finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expression, self.tz.name())
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.tz == other.tz
    }
}

/// Parses an IANA time zone name (`Europe/Berlin`, `America/New_York`, `UTC`).
///
/// # Errors
/// [`Error::InvalidTimeZone`] for an unknown name.
pub fn parse_time_zone(name: &str) -> Result<Tz> {
    Tz::from_str(name.trim()).map_err(|_| Error::InvalidTimeZone {
        name: name.to_string(),
    })
}

impl Schedule {
    /// A schedule from an expression and a time zone.
    ///
    /// # Errors
    /// [`Error::InvalidCron`] when the expression does not parse (only 5 fields or a nickname are
    /// accepted; no seconds or year field) or never matches (`0 0 30 2 *`).
    pub fn new(expression: &str, tz: Tz) -> Result<Self> {
        let expression = expression.trim();
        let invalid = |reason: String| Error::InvalidCron {
            expression: expression.to_string(),
            reason,
        };
        let fields = expression.split_whitespace().count();
        if !expression.starts_with('@') && fields != 5 {
            return Err(invalid(format!("it has {fields} fields, expected 5")));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expression)
            .map_err(|e| invalid(field_error(&parser, expression).unwrap_or(reason(&e))))?;
        let p = &cron.pattern;
        if p.days.has_modifiers() || p.days_of_week.has_modifiers() || p.matches_dom_and_dow() {
            return Err(invalid(
                "L, W, # and + are not standard cron (crontab and systemd timers lack them)".into(),
            ));
        }
        let schedule = Schedule {
            expression: expression.to_string(),
            cron,
            tz,
        };
        // A pattern such as "0 0 30 2 *" parses but never fires.
        let probe = DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or_else(Utc::now);
        if schedule.next_after(probe).is_none() {
            return Err(invalid("it never matches a date".into()));
        }
        Ok(schedule)
    }

    /// A schedule from an expression and an IANA time zone name.
    ///
    /// # Errors
    /// [`Error::InvalidTimeZone`] or [`Error::InvalidCron`].
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self> {
        Self::new(expression, parse_time_zone(time_zone)?)
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is evaluated in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The same expression evaluated in `tz`.
    pub fn with_time_zone(mut self, tz: Tz) -> Self {
        self.tz = tz;
        self
    }

    /// The systemd `OnCalendar=` values that fire at the same times, each with the time zone:
    /// `0 2 * * *` in UTC is `*-*-* 02:00:00 UTC`. Two values when both day-of-month and
    /// day-of-week are restricted (cron runs when either matches, systemd when both do).
    pub fn on_calendar(&self) -> Vec<String> {
        let p = &self.cron.pattern;
        let tz = self.tz.name();
        let time = format!(
            "{}:{}:00",
            systemd_field(&p.hours),
            systemd_field(&p.minutes)
        );
        let months = systemd_field(&p.months);
        let by_day = format!("*-{months}-{} {time} {tz}", systemd_field(&p.days));
        let by_weekday = format!("{} *-{months}-* {time} {tz}", weekdays(&p.days_of_week));
        match (p.is_dom_wildcard(), p.is_dow_wildcard()) {
            (_, true) => vec![by_day],
            (true, false) => vec![by_weekday],
            (false, false) => vec![by_day, by_weekday],
        }
    }

    /// A human-readable description ("At 02:00").
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// The first scheduled instant strictly after `after`; `None` if there is none (only for
    /// searches beyond the year 5000).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last scheduled instant at or before `at`.
    pub fn previous_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `count` scheduled instants strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(count);
        let mut cursor = after;
        while out.len() < count {
            match self.next_after(cursor) {
                Some(t) => {
                    out.push(t);
                    cursor = t;
                }
                None => break,
            }
        }
        out
    }
}

/// An expression in UTC (see [`Schedule::with_time_zone`]).
impl FromStr for Schedule {
    type Err = Error;

    fn from_str(expression: &str) -> Result<Self> {
        Self::new(expression, Tz::UTC)
    }
}

/// The fields, with the values each accepts.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat, 0 and 7 are Sunday"),
];

fn reason(e: &croner::errors::CronError) -> String {
    e.to_string().trim_end_matches('.').to_string()
}

/// The first of five fields that does not parse on its own, and why: `hour field "25": …`.
fn field_error(parser: &CronParser, expression: &str) -> Option<String> {
    let parts: Vec<&str> = expression.split_whitespace().collect();
    if parts.len() != 5 {
        return None;
    }
    (0..5).find_map(|i| {
        let alone: Vec<&str> = (0..5)
            .map(|j| if i == j { parts[i] } else { "*" })
            .collect();
        let e = parser.parse(&alone.join(" ")).err()?;
        let (name, accepted) = FIELDS[i];
        Some(format!(
            "{name} field {:?}: {} (accepted: {accepted})",
            parts[i],
            reason(&e)
        ))
    })
}

/// One field in systemd's syntax: `*`, `02`, `01..05`, `00/15` (from 00, every 15), `00,06,12`.
fn systemd_field(field: &CronComponent) -> String {
    let values = field.values();
    if values.len() == usize::from(field.max - field.min) + 1 {
        return "*".into();
    }
    if let [first, second, .., last] = values[..] {
        let step = second - first;
        let regular = values.windows(2).all(|w| w[1] - w[0] == step);
        if step > 1 && regular && last + step > field.max {
            return format!("{first:02}/{step}");
        }
    }
    runs(&values, |v| format!("{v:02}"))
}

/// Values joined by `,`, runs of three or more as `first..last`.
fn runs(values: &[u16], name: impl Fn(u16) -> String) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            out.push(format!("{}..{}", name(values[i]), name(values[j])));
        } else {
            out.extend(values[i..=j].iter().map(|v| name(*v)));
        }
        i = j + 1;
    }
    out.join(",")
}

/// The weekdays of a day-of-week field, Monday first: `Mon..Fri`, `Sat,Sun`.
fn weekdays(field: &CronComponent) -> String {
    const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    // cron counts from Sunday = 0 (7 is Sunday too); position 0 here is Monday.
    let mut days: Vec<u16> = field.values().iter().map(|d| (d + 6) % 7).collect();
    days.sort_unstable();
    days.dedup();
    runs(&days, |d| NAMES[usize::from(d)].to_string())
}
