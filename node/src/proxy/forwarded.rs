//! The forwarding headers (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`, `X-Forwarded-Host`,
//! `X-Forwarded-Proto`) a pass-through backend gets.
//!
//! A client may write anything into them, so they are believed only from a peer in
//! `server.trusted_proxies` (a load balancer in front of the gateway): its headers pass, and
//! the gateway appends that peer as the last hop of `X-Forwarded-For` and `Forwarded`. From
//! any other peer they are dropped and the gateway sets `X-Forwarded-For` and `Forwarded` to
//! the peer's address, the real client. Model upstreams get requests the gateway builds,
//! with none of these: a provider sees the gateway as its client.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The peer of a client connection, as the listener saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientPeer {
    pub addr: IpAddr,
    /// The peer is in `server.trusted_proxies`: its forwarding headers are believed.
    pub trusted_proxy: bool,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What a client may claim about who it is or where it came from.
const FORWARDING: [HeaderName; 5] = [
    HeaderName::from_static("x-forwarded-for"),
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
];

/// Sets the forwarding headers of a request to a backend from `peer`. Without a known peer
/// every forwarding header is dropped and none added.
pub(crate) fn set_forwarding(headers: &mut HeaderMap, peer: Option<ClientPeer>) {
    let Some(peer) = peer else {
        for name in &FORWARDING {
            headers.remove(name);
        }
        return;
    };
    let addr = peer.addr.to_canonical();
    let (mut xff, mut forwarded) = (String::new(), String::new());
    if peer.trusted_proxy {
        xff = joined(headers, &X_FORWARDED_FOR);
        forwarded = joined(headers, &header::FORWARDED);
    } else {
        for name in &FORWARDING {
            headers.remove(name);
        }
    }
    append(&mut xff, &addr.to_string());
    let node = match addr {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    };
    append(&mut forwarded, &node);
    for (name, value) in [(&X_FORWARDED_FOR, xff), (&header::FORWARDED, forwarded)] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name.clone(), value);
        }
    }
}

/// Every value of `name`, as one comma-separated list.
fn joined(headers: &HeaderMap, name: &HeaderName) -> String {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    values.join(", ")
}

fn append(list: &mut String, item: &str) {
    if !list.is_empty() {
        list.push_str(", ");
    }
    list.push_str(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.2"),
            ("forwarded", "for=203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("accept", "*/*"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        headers
    }

    fn value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let mut headers = claimed();
        let peer = ClientPeer {
            addr: "::ffff:192.0.2.1".parse().unwrap(),
            trusted_proxy: false,
        };
        set_forwarding(&mut headers, Some(peer));
        assert_eq!(value(&headers, "x-forwarded-for"), Some("192.0.2.1"));
        assert_eq!(value(&headers, "forwarded"), Some("for=192.0.2.1"));
        for gone in ["x-real-ip", "x-forwarded-host", "x-forwarded-proto"] {
            assert_eq!(value(&headers, gone), None, "{gone}");
        }
        assert_eq!(value(&headers, "accept"), Some("*/*"));
    }

    #[test]
    fn a_trusted_proxy_is_appended_to_what_it_says() {
        let mut headers = claimed();
        let peer = ClientPeer {
            addr: "2001:db8::7".parse().unwrap(),
            trusted_proxy: true,
        };
        set_forwarding(&mut headers, Some(peer));
        assert_eq!(
            value(&headers, "x-forwarded-for"),
            Some("203.0.113.9, 198.51.100.2, 2001:db8::7")
        );
        assert_eq!(
            value(&headers, "forwarded"),
            Some("for=203.0.113.9, for=\"[2001:db8::7]\"")
        );
        assert_eq!(value(&headers, "x-forwarded-host"), Some("evil.example"));
    }

    #[test]
    fn without_a_peer_nothing_is_forwarded() {
        let mut headers = claimed();
        set_forwarding(&mut headers, None);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }
}
