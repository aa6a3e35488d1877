//! Durations as users type them: a number with a unit.

use std::time::Duration;

/// The longest duration accepted: one year (365 days). Beyond it a typo is
/// far more likely than a wish, and larger values overflow deadlines.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parse `500ms`, `2s`, `1.5s`, `250us`, `100ns`, `1m`, `1h` (at most [`MAX`]).
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{s}' has no unit: write e.g. 500ms, 2s, 100us"))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration: write e.g. 500ms, 2s, 100us"))?;
    let ns_per = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        u => {
            return Err(format!(
                "unknown unit '{u}' in '{s}': use ns, us, ms, s, m or h"
            ))
        }
    };
    let ns = (v * ns_per).round();
    if !ns.is_finite() || ns > MAX.as_nanos() as f64 {
        return Err(format!(
            "'{s}' is longer than the one-year limit: give a shorter duration (e.g. 24h), or \
             leave --duration out and stop with Ctrl-C"
        ));
    }
    Ok(Duration::from_nanos(ns as u64))
}

/// Nanoseconds in a short human form: `215 ns`, `12.3 us`, `4.56 ms`, `1.20 s`.
pub fn human_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse("1m").unwrap(), Duration::from_secs(60));
        assert!(parse("5").unwrap_err().contains("no unit"));
        assert!(parse("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("ms").is_err());
        assert_eq!(parse("8760h").unwrap(), MAX);
        for long in ["99999999999s", "8761h", "99999999999999999999999999h"] {
            let e = parse(long).unwrap_err();
            assert!(e.contains("one-year limit"), "{long}: {e}");
        }
    }

    #[test]
    fn human() {
        assert_eq!(human_ns(215), "215 ns");
        assert_eq!(human_ns(12_345), "12.3 us");
        assert_eq!(human_ns(4_560_000), "4.56 ms");
    }
}
