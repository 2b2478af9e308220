//! A duration that reads and writes as `"250ms"`, `"5s"`, `"2m"` or `"1h"`.

use std::fmt;

/// A configuration duration. Accepts a string with a unit (`ms`, `s`, `m`,
/// `h`) or a bare integer meaning milliseconds; always serialises with a unit.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            f.write_str("0s")
        } else if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration such as \"500ms\", \"5s\" or \"1m\""))?;
        let ms = match unit {
            "" | "ms" => Some(n),
            "s" => n.checked_mul(1000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => return Err(format!("`{s}` has an unknown unit; use ms, s, m or h")),
        };
        ms.map(Duration::from_millis)
            .ok_or_else(|| format!("`{s}` is too long"))
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration such as \"500ms\", \"5s\", \"1m\" or an integer of milliseconds",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_millis(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_millis)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: a number with a unit (ms, s, m, h), or an integer of milliseconds.",
            "oneOf": [
                {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)?$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

impl utoipa::PartialSchema for Duration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9]+(ms|s|m|h)?$"))
            .examples([serde_json::json!("5s")])
            .into()
    }
}
impl utoipa::ToSchema for Duration {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (text, ms) in [
            ("250ms", 250),
            ("5s", 5000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("42", 42),
        ] {
            let d: Duration = text.parse().expect(text);
            assert_eq!(d.0.as_millis(), ms, "{text}");
        }
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::from_secs(120).to_string(), "2m");
        assert!("5 parsecs".parse::<Duration>().is_err());
        assert!("-1s".parse::<Duration>().is_err());
        assert!("99999999999999999999h".parse::<Duration>().is_err());
        let d: Duration = serde_json::from_str("1500").expect("int");
        assert_eq!(d, Duration::from_millis(1500));
    }
}
