//! Durations (`250ms`, `1.5s`, `2m`), duration ranges (`20ms..120ms`) and source-located
//! values, with their JSON Schema.

use core::fmt;
use core::time::Duration;
use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};

/// A duration written as a number and a unit: `ms`, `s` or `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

const DUR_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(ms|s|m)$";

impl Dur {
    /// Parses `250ms`, `1.5s`, `2m`.
    pub fn parse(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1_000.0)
        } else if let Some(n) = s.strip_suffix('m') {
            (n, 60_000.0)
        } else {
            return Err(format!("`{s}` is not a duration (write e.g. 250ms, 1.5s or 2m)"));
        };
        let valid = !num.is_empty()
            && num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && num.bytes().filter(|b| *b == b'.').count() <= 1
            && !num.starts_with('.')
            && !num.ends_with('.');
        if !valid {
            return Err(format!("`{s}` is not a duration (write e.g. 250ms, 1.5s or 2m)"));
        }
        let value: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration"))?;
        let ms = (value * scale).round();
        if !(0.0..=1e12).contains(&ms) {
            return Err(format!("`{s}` is out of range"));
        }
        Ok(Dur(Duration::from_millis(ms as u64)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", fmt_time(self.0))
    }
}

/// Formats a time as seconds with millisecond precision: `1.204s`.
pub fn fmt_time(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DUR_PATTERN,
            "description": "A duration: a number and a unit (ms, s or m), e.g. 250ms, 1.5s, 2m."
        })
    }
}

/// A range of durations `min..max`, or a single duration meaning exactly that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurRange {
    /// The lower bound.
    pub min: Duration,
    /// The upper bound (inclusive).
    pub max: Duration,
}

impl<'de> Deserialize<'de> for DurRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let (min, max) = match s.split_once("..") {
            Some((a, b)) => (Dur::parse(a), Dur::parse(b)),
            None => (Dur::parse(&s), Dur::parse(&s)),
        };
        let (min, max) = (min.map_err(serde::de::Error::custom)?, max.map_err(serde::de::Error::custom)?);
        if min > max {
            return Err(serde::de::Error::custom(format!("range `{s}` has its minimum above its maximum")));
        }
        Ok(DurRange { min: min.0, max: max.0 })
    }
}

impl JsonSchema for DurRange {
    fn schema_name() -> Cow<'static, str> {
        "DurationRange".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m)(\.\.[0-9]+(\.[0-9]+)?(ms|s|m))?$",
            "description": "A latency range min..max (e.g. 20ms..120ms), or one fixed duration."
        })
    }
}

/// A value with the line and column where the scenario file wrote it, so semantic errors
/// (an unknown device, a time in the past) point at the right place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    /// The value.
    pub value: T,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

impl<T> core::ops::Deref for At<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(At { value: s.value, line: s.referenced.line(), column: s.referenced.column() })
    }
}

impl<T: JsonSchema> JsonSchema for At<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(Dur::parse("250ms"), Ok(Dur(Duration::from_millis(250))));
        assert_eq!(Dur::parse("1.5s"), Ok(Dur(Duration::from_millis(1500))));
        assert_eq!(Dur::parse("2m"), Ok(Dur(Duration::from_secs(120))));
        for bad in ["", "s", "1", "1.s", ".5s", "1..2s", "-1s", "1h", "1e3s"] {
            assert!(Dur::parse(bad).is_err(), "{bad}");
        }
    }
}
