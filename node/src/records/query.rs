//! Reading records back from a node's log: by time, key, model and status, for
//! `GET /admin/v1/records` and `aigw records export`. Blocking (it reads files): run it off the
//! async threads.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::log::read_from;

/// Which records to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Received at or after (unix ms).
    pub since_ms: Option<u64>,
    /// Received before (unix ms).
    pub until_ms: Option<u64>,
    /// The key's id or name.
    pub key: Option<String>,
    /// The public model asked for.
    pub model: Option<String>,
    pub status: Option<u16>,
}

/// The fields a filter reads, without parsing the rest of the record.
#[derive(Deserialize)]
struct Head {
    timestamps: HeadTimes,
    key: Option<HeadKey>,
    model: Option<String>,
    status: u16,
}

#[derive(Deserialize)]
struct HeadTimes {
    received_ms: u64,
}

#[derive(Deserialize)]
struct HeadKey {
    id: String,
    name: String,
}

impl Filter {
    /// Whether the record `line` passes; a line that is not a record never does.
    pub fn matches(&self, line: &[u8]) -> bool {
        let Ok(head) = serde_json::from_slice::<Head>(line) else {
            return false;
        };
        let at = head.timestamps.received_ms;
        self.since_ms.is_none_or(|since| at >= since)
            && self.until_ms.is_none_or(|until| at < until)
            && self.status.is_none_or(|s| s == head.status)
            && self
                .model
                .as_deref()
                .is_none_or(|m| head.model.as_deref() == Some(m))
            && self.key.as_deref().is_none_or(|k| {
                head.key
                    .as_ref()
                    .is_some_and(|key| key.id == k || key.name == k)
            })
    }
}

/// Calls `each` with every record of the log in `dir` that passes `filter`, oldest first, until
/// `limit` were given or `each` returns false. Lines the writer has not finished are not read.
pub fn scan(
    dir: &Path,
    filter: &Filter,
    limit: usize,
    mut each: impl FnMut(Vec<u8>) -> bool,
) -> io::Result<usize> {
    if !dir.exists() {
        return Ok(0);
    }
    let mut given = 0;
    for line in read_from(dir, 0)? {
        if given >= limit {
            break;
        }
        let (_, line) = line?;
        if filter.matches(&line) {
            given += 1;
            if !each(line) {
                break;
            }
        }
    }
    Ok(given)
}

/// A point in time for a filter: unix milliseconds, an RFC 3339 time
/// (`2026-12-01T00:00:00Z`), or a duration before now (`7d`, `90m`).
pub fn parse_time(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64));
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        return Ok(now.saturating_sub(ago.as_millis() as u64));
    }
    Err(format!(
        "invalid time {text:?}: expected unix milliseconds, an RFC 3339 time such as \"2026-12-01T00:00:00Z\", or a duration before now such as \"7d\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_in_three_forms() {
        assert_eq!(parse_time("1767225600000"), Ok(1_767_225_600_000));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(1_767_225_600_000));
        let ago = parse_time("1h").unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now - ago >= 3_600_000 && now - ago < 3_700_000);
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn a_filter_reads_only_the_fields_it_needs() {
        let line = br#"{"timestamps":{"received_ms":10},"key":{"id":"key_1","name":"team"},"model":"m","status":200,"request":{}}"#;
        let pass = |f: Filter| f.matches(line);
        assert!(pass(Filter::default()));
        assert!(pass(Filter {
            key: Some("team".into()),
            ..Filter::default()
        }));
        assert!(pass(Filter {
            key: Some("key_1".into()),
            since_ms: Some(10),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            since_ms: Some(11),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            until_ms: Some(10),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            model: Some("other".into()),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            status: Some(429),
            ..Filter::default()
        }));
        assert!(!Filter::default().matches(b"not json"));
    }
}
