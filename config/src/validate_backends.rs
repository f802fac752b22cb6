//! Validation of the pass-through backends (`[[bootstrap.mcp_servers]]`, `[[bootstrap.agents]]`,
//! `[[bootstrap.sandboxes]]`) and of a key's `mcp_servers`: a child of `validate`, sharing its
//! `Validator` so every problem is reported the same way, at its line and column.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use toml::Spanned;

use super::{Declared, Validator, normalize_base_url};
use crate::backends::{
    BackendSettings, Backends, RESERVED_HEADERS, is_backend_name, is_header_name, is_header_value,
};
use crate::raw::{RawAgent, RawBackend, RawBootstrap, Text};
use crate::secret::Secret;

/// One backend entry as written, whatever its list calls the name.
struct Entry<'r> {
    name: &'r Text,
    name_key: &'static str,
    url: &'r Text,
    headers: Option<&'r Spanned<BTreeMap<String, Text>>>,
}

impl<'r> From<&'r RawBackend> for Entry<'r> {
    fn from(raw: &'r RawBackend) -> Self {
        Self {
            name: &raw.name,
            name_key: "name",
            url: &raw.url,
            headers: raw.headers.as_ref(),
        }
    }
}

impl<'r> From<&'r RawAgent> for Entry<'r> {
    fn from(raw: &'r RawAgent) -> Self {
        Self {
            name: &raw.kind,
            name_key: "type",
            url: &raw.url,
            headers: raw.headers.as_ref(),
        }
    }
}

impl Validator<'_> {
    /// The three backend lists; `None` when any entry is invalid (each problem reported).
    pub(super) fn backends(&mut self, raw: &RawBootstrap) -> Option<Backends> {
        let mcp_servers = self.backend_list(
            raw.mcp_servers.iter().map(Entry::from),
            "bootstrap.mcp_servers",
            "MCP server name",
        );
        let agents = self.backend_list(
            raw.agents.iter().map(Entry::from),
            "bootstrap.agents",
            "agent type",
        );
        let sandboxes = self.backend_list(
            raw.sandboxes.iter().map(Entry::from),
            "bootstrap.sandboxes",
            "sandbox name",
        );
        Some(Backends {
            mcp_servers: mcp_servers?,
            agents: agents?,
            sandboxes: sandboxes?,
        })
    }

    fn backend_list<'r>(
        &mut self,
        entries: impl Iterator<Item = Entry<'r>>,
        section: &str,
        what: &str,
    ) -> Option<Vec<BackendSettings>> {
        let mut seen = HashMap::new();
        let parsed: Vec<Option<BackendSettings>> = entries
            .enumerate()
            .map(|(i, entry)| self.backend(&entry, &format!("{section}[{i}]"), what, &mut seen))
            .collect();
        parsed.into_iter().collect()
    }

    fn backend(
        &mut self,
        raw: &Entry<'_>,
        key: &str,
        what: &str,
        seen: &mut HashMap<String, usize>,
    ) -> Option<BackendSettings> {
        let name_key = format!("{key}.{}", raw.name_key);
        let name = if is_backend_name(&raw.name.value) {
            Some(raw.name.value.clone())
        } else {
            self.report(
                &raw.name.span,
                &name_key,
                format!(
                    "invalid {what} {:?}; expected a non-empty name of ASCII letters, digits, '.', '_' and '-' (it is a URL path segment)",
                    raw.name.value
                ),
            );
            None
        };
        let unique = self.unique(raw.name, &name_key, what, seen);
        let url = match normalize_base_url(&raw.url.value) {
            Ok(url) => Some(url),
            Err(why) => {
                self.report(
                    &raw.url.span,
                    &format!("{key}.url"),
                    format!("invalid url {:?}: {why}", raw.url.value),
                );
                None
            }
        };
        let headers = match raw.headers {
            None => Some(Vec::new()),
            Some(headers) => self.backend_headers(headers.get_ref(), &headers.span(), key),
        };
        if !unique {
            return None;
        }
        Some(BackendSettings {
            name: name?,
            url: url?,
            headers: headers?,
        })
    }

    fn backend_headers(
        &mut self,
        raw: &BTreeMap<String, Text>,
        span: &Range<usize>,
        key: &str,
    ) -> Option<Vec<(String, Secret)>> {
        let mut ok = true;
        let mut headers: Vec<(String, Secret)> = Vec::with_capacity(raw.len());
        for (name, value) in raw {
            let header_key = format!("{key}.headers.{name}");
            let lower = name.to_ascii_lowercase();
            if !is_header_name(name) {
                // A key has no span of its own here; the table's start is the closest place.
                self.report(
                    span,
                    &header_key,
                    format!("invalid header name {name:?}; expected an HTTP field name such as \"X-Api-Key\""),
                );
                ok = false;
            } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                self.report(
                    span,
                    &header_key,
                    format!("{name:?} is managed by the gateway per connection; expected an end-to-end header such as \"Authorization\" or \"X-Api-Key\""),
                );
                ok = false;
            } else if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                self.report(
                    span,
                    &header_key,
                    format!("header {name:?} is set twice (names ignore case); expected it once"),
                );
                ok = false;
            } else if !is_header_value(&value.value) {
                // The value may be a secret: the message does not quote it.
                self.report(
                    &value.span,
                    &header_key,
                    "invalid header value; expected no control characters (no line breaks) and no leading or trailing spaces",
                );
                ok = false;
            } else {
                headers.push((name.clone(), Secret::new(value.value.clone())));
            }
        }
        ok.then_some(headers)
    }

    /// A key's `mcp_servers`: names declared in `[[bootstrap.mcp_servers]]`, each once, or
    /// `["*"]` for every server (`None`).
    pub(super) fn key_mcp_servers(
        &mut self,
        raw: &Spanned<Vec<Text>>,
        key: &str,
        servers: &Declared<'_>,
    ) -> Option<Option<Vec<String>>> {
        let list_key = format!("{key}.mcp_servers");
        self.names_or_all(raw.get_ref(), &list_key, "MCP server", "server", servers)
    }
}
