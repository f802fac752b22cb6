//! Ids the gateway hands out for state that lives on one upstream (a video job, an MCP
//! session): the id names the upstream (or MCP server), the upstream's own id and the key it belongs to, and
//! carries an HMAC-SHA256 over them with the cluster-wide `server.id_secret`. Any node can so
//! route a follow-up to the right upstream without shared state, and a client can neither
//! forge an id for another upstream nor use another key's id.
//!
//! Shape: `<prefix>_<hex(upstream "\n" upstream id)>_<hex(first 16 bytes of the MAC)>`, which
//! is safe in a URL path. The key is inside the MAC but not in the id.

use sha2::{Digest, Sha256};

use aigw_config::Config;

/// Signs and checks ids; the key is derived once.
#[derive(Clone)]
pub(crate) struct IdSigner {
    key: [u8; 32],
}

/// What a valid id names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SignedId {
    pub upstream: String,
    pub upstream_id: String,
}

const MAC_BYTES: usize = 16;

impl IdSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: Sha256::digest(secret).into(),
        }
    }

    /// `server.id_secret`, else derived from `admin.token` (the same on every node of a
    /// cluster that shares its admin token), else random for this process (ids then work only
    /// on this node until it restarts; a warning says so).
    pub fn from_config(config: &Config) -> Self {
        if let Some(secret) = &config.server.id_secret {
            return Self::new(secret.expose().as_bytes());
        }
        if let Some(admin) = &config.admin {
            let derived = format!("aigw id secret\n{}", admin.token.expose());
            return Self::new(derived.as_bytes());
        }
        tracing::warn!(
            "neither server.id_secret nor admin.token is set: video ids and MCP session ids \
             are signed with a random secret and work only on this node until it restarts"
        );
        Self::new(&rand::random::<[u8; 32]>())
    }

    fn mac(&self, prefix: &str, key_id: &str, payload: &[u8]) -> [u8; 32] {
        let mut message = Vec::with_capacity(prefix.len() + key_id.len() + payload.len() + 2);
        message.extend_from_slice(prefix.as_bytes());
        message.push(b'\n');
        message.extend_from_slice(key_id.as_bytes());
        message.push(b'\n');
        message.extend_from_slice(payload);
        hmac_sha256(&self.key, &message)
    }

    pub fn sign(&self, prefix: &str, key_id: &str, upstream: &str, upstream_id: &str) -> String {
        let payload = format!("{upstream}\n{upstream_id}");
        let mac = self.mac(prefix, key_id, payload.as_bytes());
        format!(
            "{prefix}_{}_{}",
            hex::encode(payload),
            hex::encode(&mac[..MAC_BYTES])
        )
    }

    /// What `id` names, if this signer made it for `key_id` with `prefix`.
    pub fn verify(&self, prefix: &str, key_id: &str, id: &str) -> Option<SignedId> {
        let rest = id.strip_prefix(prefix)?.strip_prefix('_')?;
        let (payload_hex, mac_hex) = rest.split_once('_')?;
        let payload = hex::decode(payload_hex).ok()?;
        let given = hex::decode(mac_hex).ok()?;
        let mac = self.mac(prefix, key_id, &payload);
        let equal: bool = subtle::ConstantTimeEq::ct_eq(&mac[..MAC_BYTES], &given[..]).into();
        if !equal {
            return None;
        }
        let payload = String::from_utf8(payload).ok()?;
        let (upstream, upstream_id) = payload.split_once('\n')?;
        Some(SignedId {
            upstream: upstream.to_owned(),
            upstream_id: upstream_id.to_owned(),
        })
    }
}

/// HMAC-SHA256 (RFC 2104) with a 32-byte key.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut inner_pad = [0x36u8; BLOCK];
    let mut outer_pad = [0x5cu8; BLOCK];
    for (i, byte) in key.iter().enumerate() {
        inner_pad[i] ^= byte;
        outer_pad[i] ^= byte;
    }
    let inner = Sha256::new()
        .chain_update(inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2_shape() {
        // RFC 4231 case 2 uses the 4-byte key "Jefe"; HMAC pads short keys with zeros, so a
        // 32-byte zero-padded key gives the same MAC.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn an_id_round_trips_and_any_change_or_other_key_is_refused() {
        let signer = IdSigner::new(b"cluster secret");
        let id = signer.sign("video", "key_a", "mock-b", "video_123");
        assert!(id.starts_with("video_"));
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let named = signer.verify("video", "key_a", &id).unwrap();
        assert_eq!(named.upstream, "mock-b");
        assert_eq!(named.upstream_id, "video_123");
        assert_eq!(signer.verify("video", "key_b", &id), None);
        assert_eq!(IdSigner::new(b"other").verify("video", "key_a", &id), None);
        let forged = signer
            .sign("video", "key_a", "mock-a", "video_123")
            .replace(&hex::encode("mock-a"), &hex::encode("mock-b"));
        assert_eq!(signer.verify("video", "key_a", &forged), None);
        assert_eq!(signer.verify("video", "key_a", "video_zz_00"), None);
        assert_eq!(signer.verify("mcp", "key_a", &id), None);
    }
}
