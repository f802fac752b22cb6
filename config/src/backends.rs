//! The pass-through backends: MCP servers, agent backends and sandboxes the gateway relays
//! requests to under `/v1/mcp/{name}`, `/v1/agent/{type}` and `/v1/sandboxes/{name}`.
//!
//! Invariants (established by `validate`): names are unique within their list and made of
//! ASCII letters, digits, `.`, `_` and `-` (they are path segments); URLs are
//! `http(s)://host...` without a trailing `/`; header names are RFC 9110 tokens that are not
//! hop-by-hop or framing headers, and header values hold no control characters.

use std::fmt;

use crate::Secret;

/// `[[bootstrap.mcp_servers]]`, `[[bootstrap.agents]]` (where the name is `type`) or
/// `[[bootstrap.sandboxes]]`: one backend the gateway passes requests through to.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendSettings {
    /// The path segment clients use (`/v1/mcp/{name}`).
    pub name: String,
    /// Where `/v1/mcp/{name}` leads; what follows it in the client's path is appended.
    pub url: String,
    /// Sent upstream on every request (credentials); never shown to clients or logged.
    pub headers: Vec<(String, Secret)>,
}

impl fmt::Debug for BackendSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("BackendSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("headers", &names)
            .finish()
    }
}

/// The three lists of pass-through backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backends {
    pub mcp_servers: Vec<BackendSettings>,
    pub agents: Vec<BackendSettings>,
    pub sandboxes: Vec<BackendSettings>,
}

/// Headers a backend entry may not set: hop-by-hop (RFC 9110 7.6.1) and message framing,
/// which belong to each connection, and `Host`, which belongs to the URL.
pub(crate) const RESERVED_HEADERS: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// An RFC 9110 field name (a token).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A field value without control characters (tab allowed) and without surrounding spaces.
pub(crate) fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        && value.trim() == value
}

/// A name safe as a path segment: ASCII letters, digits, `.`, `_` and `-`.
pub(crate) fn is_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_tokens_and_values_have_no_controls() {
        assert!(is_header_name("X-Api-Key"));
        assert!(!is_header_name("X Api"));
        assert!(!is_header_name(""));
        assert!(is_header_value("Bearer abc"));
        assert!(!is_header_value("a\r\nInjected: 1"));
        assert!(!is_header_value(" padded"));
    }

    #[test]
    fn debug_shows_header_names_but_no_values() {
        let backend = BackendSettings {
            name: "fs".into(),
            url: "http://h:1".into(),
            headers: vec![("X-Token".into(), Secret::new("very-secret".into()))],
        };
        let shown = format!("{backend:?}");
        assert!(
            shown.contains("X-Token") && !shown.contains("very-secret"),
            "{shown}"
        );
    }

    #[test]
    fn backend_names_are_path_segments() {
        assert!(is_backend_name("fs-1.v2_x"));
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(!is_backend_name(bad), "{bad:?}");
        }
    }
}
