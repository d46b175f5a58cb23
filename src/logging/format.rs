//! OVS's log line: `2026-11-22T04:46:14.123Z|00042|module|INFO|message key=value`.
//!
//! Everything that reaches a line passes through [`escape_into`], so a value read from OVSDB
//! (an interface name, an option) can never start a forged line of its own.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};

use super::spec::Level;

/// Appends `s` with control characters escaped (`\n`, `\r`, `\t`, `\u{1b}` ...).
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
pub fn timestamp(now: SystemTime) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Collects an event's message and its other fields, already escaped.
#[derive(Default)]
pub struct FieldText {
    message: String,
    fields: String,
}

impl FieldText {
    fn push(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            escape_into(&mut self.message, value);
        } else {
            self.fields.push(' ');
            escape_into(&mut self.fields, field.name());
            self.fields.push('=');
            escape_into(&mut self.fields, value);
        }
    }

    /// The message followed by ` key=value` for every other field.
    pub fn text(&self) -> String {
        let mut s = self.message.clone();
        if s.is_empty() {
            s.push_str(self.fields.trim_start());
        } else {
            s.push_str(&self.fields);
        }
        s
    }
}

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, &format!("{value:?}"));
    }
}

/// One complete line, newline included.
pub fn line(time: SystemTime, seq: u64, module: &str, level: Level, text: &str) -> String {
    format!(
        "{}|{seq:05}|{module}|{}|{text}\n",
        timestamp(time),
        level.label()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_with_millis() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_322_774_123);
        assert_eq!(timestamp(t), "2026-11-22T04:46:14.123Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn line_layout() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_322_774_123);
        assert_eq!(
            line(t, 42, "ovsdb", Level::Info, "connected"),
            "2026-11-22T04:46:14.123Z|00042|ovsdb|INFO|connected\n"
        );
    }

    #[test]
    fn control_characters_cannot_break_lines() {
        let mut s = String::new();
        escape_into(&mut s, "a\nb\rc\u{1b}[31m");
        assert_eq!(s, "a\\nb\\rc\\u{1b}[31m");
        assert!(!s.contains('\n'));
    }
}
