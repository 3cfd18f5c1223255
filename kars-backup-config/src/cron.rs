//! Standard five-field cron expressions: syntax check and translation to systemd `OnCalendar=`.

use std::collections::BTreeSet;

/// A parsed five-field cron expression (`minute hour day-of-month month day-of-week`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    fields: [Field; 5],
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    star: bool,
    items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// `*/n` (n = 1 for a plain `*` inside a list).
    Every(u32),
    /// `a`, `a-b`, `a-b/n`, `a/n` (to the field's maximum).
    Range {
        from: u32,
        to: u32,
        step: u32,
        open: bool,
    },
}

const NAMES: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const SYSTEMD_DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

impl CronExpr {
    /// Parses `0 2 * * *`, lists, ranges, steps, month and weekday names, and the macros
    /// `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`).
    ///
    /// # Errors
    /// A message naming the field and what is accepted.
    pub fn parse(expr: &str) -> Result<CronExpr, String> {
        let expanded = match expr.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "unsupported cron macro {other:?}: use @hourly, @daily, @weekly, @monthly, @yearly or five fields"
                ));
            }
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "cron expression {expr:?} has {} fields; use five: minute hour day-of-month month day-of-week (e.g. \"0 2 * * *\" for 02:00 daily)",
                parts.len()
            ));
        }
        let mut fields = Vec::with_capacity(5);
        for (i, part) in parts.iter().enumerate() {
            fields.push(parse_field(part, i).map_err(|e| {
                format!(
                    "cron expression {expr:?}: {} field {part:?}: {e}",
                    NAMES[i].0
                )
            })?);
        }
        Ok(CronExpr {
            fields: fields.try_into().expect("five fields"),
        })
    }

    /// The systemd `OnCalendar=` values with the same times (two when both day-of-month and
    /// day-of-week are restricted: cron runs when either matches, systemd when both do, so each
    /// gets its own line).
    pub fn to_on_calendar(&self, time_zone: &str) -> Vec<String> {
        let [minute, hour, dom, month, dow] = &self.fields;
        let tz = if time_zone.is_empty() {
            String::new()
        } else {
            format!(" {time_zone}")
        };
        let time = format!("{}:{}:00", systemd_field(hour, 0), systemd_field(minute, 0));
        let date = |dom: &str| format!("*-{}-{dom}", systemd_field(month, 1));
        match (dom.star, dow.star) {
            (_, true) => vec![format!("{} {time}{tz}", date(&systemd_field(dom, 1)))],
            (true, false) => vec![format!("{} {} {time}{tz}", weekdays(dow), date("*"))],
            (false, false) => vec![
                format!("{} {time}{tz}", date(&systemd_field(dom, 1))),
                format!("{} {} {time}{tz}", weekdays(dow), date("*")),
            ],
        }
    }
}

fn parse_field(text: &str, index: usize) -> Result<Field, String> {
    let (_, min, max) = NAMES[index];
    let star = text == "*" || text == "?";
    let mut items = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("bad step {s:?}: a number from 1"))?;
                (r, Some(step))
            }
            None => (part, None),
        };
        if range == "*" || range == "?" {
            items.push(Item::Every(step.unwrap_or(1)));
            continue;
        }
        let (from, to, open) = match range.split_once('-') {
            Some((a, b)) => (value(a, index)?, value(b, index)?, false),
            None => {
                let v = value(range, index)?;
                (v, if step.is_some() { max } else { v }, step.is_some())
            }
        };
        for v in [from, to] {
            if v < min || v > max {
                return Err(format!("{v} is out of range {min}-{max}"));
            }
        }
        if from > to {
            return Err(format!("range {from}-{to} runs backwards"));
        }
        items.push(Item::Range {
            from,
            to,
            step: step.unwrap_or(1),
            open,
        });
    }
    Ok(Field { star, items })
}

fn value(text: &str, index: usize) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let names: &[&str] = match index {
        3 => &MONTHS,
        4 => &DAYS,
        _ => &[],
    };
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(if index == 3 { i as u32 + 1 } else { i as u32 });
    }
    text.parse().map_err(|_| {
        format!(
            "{text:?} is not a number{}",
            match index {
                3 => " or month name (jan-dec)",
                4 => " or weekday name (sun-sat)",
                _ => "",
            }
        )
    })
}

/// One field in systemd's syntax (`*`, `02`, `1..5`, `0/15`, `00,30`).
fn systemd_field(field: &Field, origin: u32) -> String {
    if field.star {
        return "*".into();
    }
    let parts: Vec<String> = field
        .items
        .iter()
        .map(|item| match item {
            Item::Every(1) => "*".into(),
            Item::Every(n) => format!("{origin:02}/{n}"),
            Item::Range {
                from, to, step: 1, ..
            } if from == to => format!("{from:02}"),
            Item::Range {
                from, to, step: 1, ..
            } => format!("{from:02}..{to:02}"),
            Item::Range {
                from,
                step,
                open: true,
                ..
            } => format!("{from:02}/{step}"),
            Item::Range { from, to, step, .. } => (*from..=*to)
                .step_by(*step as usize)
                .map(|v| format!("{v:02}"))
                .collect::<Vec<_>>()
                .join(","),
        })
        .collect();
    parts.join(",")
}

/// The weekdays of a day-of-week field as systemd names (`Mon..Fri`, `Sat,Sun`).
fn weekdays(field: &Field) -> String {
    let mut days = BTreeSet::new();
    for item in &field.items {
        let (from, to, step) = match item {
            Item::Every(n) => (0, 6, *n),
            Item::Range { from, to, step, .. } => (*from, *to, *step),
        };
        for v in (from..=to).step_by(step as usize) {
            days.insert(v % 7);
        }
    }
    // Monday-first order, runs of three or more as ranges.
    let order: Vec<u32> = [1, 2, 3, 4, 5, 6, 0]
        .into_iter()
        .filter(|d| days.contains(d))
        .collect();
    let position = |d: u32| (d + 6) % 7;
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && position(order[j + 1]) == position(order[j]) + 1 {
            j += 1;
        }
        if j - i >= 2 {
            out.push(format!(
                "{}..{}",
                SYSTEMD_DAYS[order[i] as usize], SYSTEMD_DAYS[order[j] as usize]
            ));
        } else {
            for d in &order[i..=j] {
                out.push(SYSTEMD_DAYS[*d as usize].to_string());
            }
        }
        i = j + 1;
    }
    out.join(",")
}

/// A cron-expression checker beyond the built-in syntax check (the scheduler's own parser, so
/// that `config check` refuses what the daemon would refuse).
pub type CronValidator = fn(&str) -> Result<(), String>;

static EXTRA_CRON_VALIDATOR: std::sync::OnceLock<CronValidator> = std::sync::OnceLock::new();

/// Registers the scheduler's cron parser as an extra check of every `schedule.cron` (once per
/// process; later calls are ignored).
pub fn set_cron_validator(validator: CronValidator) {
    let _ = EXTRA_CRON_VALIDATOR.set(validator);
}

/// The built-in syntax check, then the registered validator (see [`set_cron_validator`]).
pub(crate) fn validate_cron(expr: &str) -> Result<(), String> {
    CronExpr::parse(expr)?;
    if let Some(v) = EXTRA_CRON_VALIDATOR.get() {
        v(expr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(expr: &str) -> Vec<String> {
        CronExpr::parse(expr).unwrap().to_on_calendar("")
    }

    #[test]
    fn translates_common_expressions() {
        assert_eq!(cal("0 2 * * *"), vec!["*-*-* 02:00:00"]);
        assert_eq!(cal("@daily"), vec!["*-*-* 00:00:00"]);
        assert_eq!(cal("*/15 * * * *"), vec!["*-*-* *:00/15:00"]);
        assert_eq!(cal("30 4 1 * *"), vec!["*-*-01 04:30:00"]);
        assert_eq!(cal("0 3 * * 0"), vec!["Sun *-*-* 03:00:00"]);
        assert_eq!(cal("0 3 * * 1-5"), vec!["Mon..Fri *-*-* 03:00:00"]);
        assert_eq!(cal("0 3 * * sat,sun"), vec!["Sat,Sun *-*-* 03:00:00"]);
        assert_eq!(cal("0 0-12/6 * jan *"), vec!["*-01-* 00,06,12:00:00"]);
        assert_eq!(
            cal("0 2 1 * 0"),
            vec!["*-*-01 02:00:00", "Sun *-*-* 02:00:00"]
        );
        assert_eq!(
            CronExpr::parse("0 2 * * *")
                .unwrap()
                .to_on_calendar("Europe/Berlin"),
            vec!["*-*-* 02:00:00 Europe/Berlin"]
        );
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in [
            "0 2 * *",
            "61 * * * *",
            "0 25 * * *",
            "0 2 0 * *",
            "0 2 * 13 *",
            "0 2 * * 8",
            "5-1 * * * *",
            "*/0 * * * *",
            "x * * * *",
            "@reboot",
            "0 0 2 * * *",
        ] {
            assert!(CronExpr::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
