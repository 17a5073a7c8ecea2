//! Human units in the config: a key whose name ends in a unit (`_ms`, `_seconds`, `_hours`,
//! `_days`, `_bytes`) takes an integer in that unit, or a string with a unit of its own:
//! `timeout_ms = "10s"`, `max_bytes = "256MiB"`, `retention_days = "2w"`. The string is
//! converted into the key's unit before the config is read, so every key keeps its type and
//! its integer form.

use config::{Map, Value, ValueKind};

use super::ConfigError;

/// What a key's name says its number counts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    /// A duration, in this many seconds per unit of the key.
    Time(f64),
    Bytes,
}

fn unit_of(key: &str) -> Option<Unit> {
    let ends = |s: &str| key.ends_with(s);
    if ends("_ms") {
        Some(Unit::Time(0.001))
    } else if ends("_seconds") {
        Some(Unit::Time(1.0))
    } else if ends("_hours") {
        Some(Unit::Time(3600.0))
    } else if ends("_days") {
        Some(Unit::Time(86_400.0))
    } else if ends("_bytes") {
        Some(Unit::Bytes)
    } else {
        None
    }
}

/// Splits "256MiB" into (256.0, "MiB").
fn number_and_suffix(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (n, suffix) = t.split_at(end);
    let n: f64 = n.replace('_', "").parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n, suffix.trim()))
}

/// Seconds in `text`: a number with one unit (ms, s, m, h, d, w), e.g. "500ms", "1.5h".
pub fn parse_duration(text: &str) -> Option<f64> {
    let (n, suffix) = number_and_suffix(text)?;
    let per = match suffix {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        _ => return None,
    };
    Some(n * per)
}

/// Bytes in `text`: a number with a unit, decimal (B, kB, MB, GB, TB) or binary (KiB, MiB,
/// GiB, TiB), e.g. "256MiB", "1.5GB".
pub fn parse_size(text: &str) -> Option<f64> {
    let (n, suffix) = number_and_suffix(text)?;
    let per: f64 = match suffix.to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * per)
}

/// The number `text` stands for under `key`, in the key's unit; `Ok(None)` when it is a plain
/// number (left for the key's own type to read).
fn convert(key: &str, unit: Unit, text: &str) -> Result<Option<ValueKind>, ConfigError> {
    if text.trim().parse::<f64>().is_ok() {
        return Ok(None);
    }
    let bad = |what: &str, example: &str| {
        ConfigError(format!(
            "{key}: '{text}' is not {what}; give a number in the key's unit, or a number with a \
             unit, e.g. {example}"
        ))
    };
    match unit {
        Unit::Time(per) => {
            let secs = parse_duration(text)
                .ok_or_else(|| bad("a duration", "\"500ms\", \"10s\", \"2m\", \"1h\", \"7d\""))?;
            let n = secs / per;
            if n >= i64::MAX as f64 {
                return Err(too_large(key, text));
            }
            if per >= 3600.0 && key.ends_with("_hours") && n.fract() != 0.0 {
                // `half_life_hours` is fractional; whole hours elsewhere are checked by type.
                return Ok(Some(ValueKind::Float(n)));
            }
            if (n - n.round()).abs() > 1e-9 {
                return Err(ConfigError(format!(
                    "{key}: '{text}' is not a whole number of {}; use a finer key or round it",
                    &key[key.rfind('_').map_or(0, |i| i + 1)..]
                )));
            }
            Ok(Some(ValueKind::I64(n.round() as i64)))
        }
        Unit::Bytes => {
            let n =
                parse_size(text).ok_or_else(|| bad("a size", "\"64KiB\", \"256MiB\", \"1GB\""))?;
            if n >= i64::MAX as f64 {
                return Err(too_large(key, text));
            }
            Ok(Some(ValueKind::I64(n.round() as i64)))
        }
    }
}

fn too_large(key: &str, text: &str) -> ConfigError {
    ConfigError(format!(
        "{key}: '{text}' is too large; give a smaller value"
    ))
}

/// Every string under a unit key, converted: `(path, value)` for `set_override`, e.g.
/// `("rules[0].ttl_seconds", 300)`.
pub fn conversions(map: &Map<String, Value>) -> Result<Vec<(String, ValueKind)>, ConfigError> {
    let mut out = Vec::new();
    walk_table(map, "", &mut out)?;
    Ok(out)
}

fn walk_table(
    map: &Map<String, Value>,
    prefix: &str,
    out: &mut Vec<(String, ValueKind)>,
) -> Result<(), ConfigError> {
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        walk(&v.kind, k, &path, out)?;
    }
    Ok(())
}

fn walk(
    kind: &ValueKind,
    key: &str,
    path: &str,
    out: &mut Vec<(String, ValueKind)>,
) -> Result<(), ConfigError> {
    match kind {
        ValueKind::String(s) => {
            if let Some(unit) = unit_of(key) {
                if let Some(v) = convert(path, unit, s)? {
                    out.push((path.to_owned(), v));
                }
            }
        }
        ValueKind::Table(t) => walk_table(t, path, out)?,
        ValueKind::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(&item.kind, key, &format!("{path}[{i}]"), out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Some(0.5));
        assert_eq!(parse_duration("10s"), Some(10.0));
        assert_eq!(parse_duration(" 2m "), Some(120.0));
        assert_eq!(parse_duration("1.5h"), Some(5400.0));
        assert_eq!(parse_duration("7d"), Some(604_800.0));
        for bad in ["", "s", "10", "10x", "-1s", "1e3s", "ten s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(parse_size("256MiB"), Some(268_435_456.0));
        assert_eq!(parse_size("1GB"), Some(1e9));
        assert_eq!(parse_size("64kib"), Some(65_536.0));
        assert_eq!(parse_size("1_000B"), Some(1000.0));
        for bad in ["", "MiB", "12", "12 parsecs", "-1KB"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn converted_into_the_keys_unit() {
        let c = |key: &str, text: &str| convert(key, unit_of(key).unwrap(), text);
        assert_eq!(
            c("timeout_ms", "10s").unwrap(),
            Some(ValueKind::I64(10_000))
        );
        assert_eq!(c("ttl_seconds", "5m").unwrap(), Some(ValueKind::I64(300)));
        assert_eq!(c("window_hours", "2d").unwrap(), Some(ValueKind::I64(48)));
        assert_eq!(
            c("half_life_hours", "90m").unwrap(),
            Some(ValueKind::Float(1.5))
        );
        assert_eq!(c("retention_days", "2w").unwrap(), Some(ValueKind::I64(14)));
        assert_eq!(
            c("max_bytes", "256MiB").unwrap(),
            Some(ValueKind::I64(268_435_456))
        );
        // A plain number is the key's own business (its type reads it).
        assert_eq!(c("timeout_ms", "250").unwrap(), None);
        let e = c("upstream.timeout_ms", "10 parsecs").unwrap_err().0;
        assert!(
            e.starts_with("upstream.timeout_ms: '10 parsecs' is not a duration"),
            "{e}"
        );
        let e = c("ttl_seconds", "1500ms").unwrap_err().0;
        assert!(e.contains("not a whole number of seconds"), "{e}");
        let e = c("tiers.l1.max_bytes", "99999999999999999999999999TiB")
            .unwrap_err()
            .0;
        assert!(e.ends_with("is too large; give a smaller value"), "{e}");
        let e = c("upstream.timeout_ms", "99999999999999999999w")
            .unwrap_err()
            .0;
        assert!(e.ends_with("is too large; give a smaller value"), "{e}");
        let e = c("upstream.timeout_ms", &format!("{}s", "9".repeat(400)))
            .unwrap_err()
            .0;
        assert!(e.contains("is not a duration"), "an infinite number: {e}");
        for hostile in ["1.2.3s", "\u{0661}\u{0662}s", "0x10s", "", "5s\0", "1e3s"] {
            assert!(c("upstream.timeout_ms", hostile).is_err(), "{hostile:?}");
        }
        let e = c("tiers.l1.max_bytes", "lots").unwrap_err().0;
        assert!(
            e.starts_with("tiers.l1.max_bytes: 'lots' is not a size"),
            "{e}"
        );
    }
}
