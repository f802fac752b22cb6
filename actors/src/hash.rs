//! A hash that every node computes the same way, whatever its build or platform: FNV-1a over
//! the bytes, then splitmix64's finalizer to spread FNV's weak low bits.
//!
//! `std`'s hashers are randomly seeded or explicitly unstable across releases, and rendezvous
//! hashing needs every node (old and new binaries during a rolling upgrade included) to rank
//! targets identically without talking.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The stable hash of `parts`, each terminated so that ("ab", "c") and ("a", "bc") differ.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET;
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        // 0xff never occurs in UTF-8, so it is an unambiguous separator for text parts.
        hash ^= 0xff;
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    mix(hash)
}

/// splitmix64's finalizer: every input bit affects every output bit.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_a_fixed_function_of_its_input() {
        // Pinned: changing it would move every sticky session during an upgrade.
        assert_eq!(
            stable_hash(&[b"model", b"session-1"]),
            0x1b5c_e613_05a6_1b89
        );
        assert_eq!(
            stable_hash(&[b"a", b"b"]),
            stable_hash(&[b"a", b"b"]),
            "deterministic"
        );
    }

    #[test]
    fn part_boundaries_matter() {
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
    }
}
