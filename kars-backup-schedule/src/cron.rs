//! Cron expressions evaluated in an IANA time zone.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

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
/// All instants in and out are UTC.
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
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| invalid(e.to_string()))?;
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
