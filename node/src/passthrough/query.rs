//! Query-string surgery on raw (still percent-encoded) queries: read one parameter, drop one,
//! or rewrite the values of some. Pairs are kept in order and as written, so what the gateway
//! does not touch reaches the backend byte for byte.

/// The WebSocket clients' alternative to `Authorization: Bearer`.
pub(super) const API_KEY: &str = "api_key";

/// The first value of `name`, percent-decoded.
pub(super) fn value(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| percent_decode(n) == name)
        .map(|(_, v)| percent_decode(v))
}

/// The query without any `name` parameter (however its name is encoded); `None` when nothing
/// is left.
pub(super) fn without(query: Option<&str>, name: &str) -> Option<String> {
    let kept: Vec<&str> = query?
        .split('&')
        .filter(|pair| percent_decode(pair.split_once('=').map_or(*pair, |(n, _)| n)) != name)
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The query with the value of each parameter in `names` (however its name is encoded)
/// replaced by `rewrite(value)`; the first error stops it.
pub(super) fn rewrite<E>(
    query: &str,
    names: &[&str],
    mut rewrite: impl FnMut(&str) -> Result<String, E>,
) -> Result<String, E> {
    let mut out = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((name, value)) if names.contains(&percent_decode(name).as_str()) => {
                out.push(format!("{name}={}", rewrite(value)?));
            }
            _ => out.push(pair.to_owned()),
        }
    }
    Ok(out.join("&"))
}

pub(super) fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_read_decoded_and_dropped_without_touching_the_others() {
        let q = Some("a=1&api_key=sk%2Dx&b=%20");
        assert_eq!(value(q, API_KEY).as_deref(), Some("sk-x"));
        assert_eq!(value(q, "missing"), None);
        assert_eq!(without(q, API_KEY).as_deref(), Some("a=1&b=%20"));
        assert_eq!(without(Some("api_key=x"), API_KEY), None);
        assert_eq!(without(None, API_KEY), None);
        // An encoded name is the same name: it cannot slip past.
        assert_eq!(
            without(Some("api%5Fkey=x&a=1"), API_KEY).as_deref(),
            Some("a=1")
        );
        assert_eq!(
            value(Some("api%5fkey=sk-y"), API_KEY).as_deref(),
            Some("sk-y")
        );
        let rewritten: Result<String, ()> =
            rewrite("session%5Fid=raw&b=2", &["session_id"], |_| {
                Ok("signed".into())
            });
        assert_eq!(rewritten.unwrap(), "session%5Fid=signed&b=2");
    }

    #[test]
    fn rewriting_touches_only_the_named_parameters() {
        let out = rewrite::<()>("x=1&session_id=abc&y", &["session_id"], |v| {
            Ok(format!("<{v}>"))
        });
        assert_eq!(out.unwrap(), "x=1&session_id=<abc>&y");
        let failed = rewrite("session_id=abc", &["session_id"], |_| Err("bad"));
        assert_eq!(failed, Err("bad"));
    }
}
