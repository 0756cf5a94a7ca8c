//! Helpers shared by the binaries' command lines. Pure.

use std::time::Duration;

/// Parse a duration flag such as `500ms`, `5s`, `5m` or `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{e} (use forms like 500ms, 5s, 5m)"))?;
    Duration::try_from(d).map_err(|_| "duration must not be negative".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("5s"));
    }
}
