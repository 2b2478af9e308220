//! The API key format and its hashing.
//!
//! A key reads `tg_live_` or `tg_test_`, then 24 random base62 characters
//! (about 143 bits from the operating system's generator), then a 6-character
//! base62 CRC-32 of everything before it:
//!
//! ```text
//! tg_live_3kPz81QeVbN0sXy7LmA2cD4f1Hq9Zr
//! └──┬──┘└──────────┬───────────┘└─┬──┘
//!  prefix        random body     checksum
//! ```
//!
//! The fixed prefix lets secret scanners recognise a leaked key; the checksum
//! lets the gateway refuse a mistyped or invented key without any lookup.
//! Only an HMAC-SHA-256 of the key under a server-side pepper is stored, so a
//! copy of the database alone cannot be used to check guesses.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tollgate_core::identity::KeyEnvironment;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters in a key.
pub const BODY_LEN: usize = 24;
/// Checksum characters at the end of a key.
pub const CHECKSUM_LEN: usize = 6;
/// Length of the environment prefix (`tg_live_`, `tg_test_`).
pub const PREFIX_LEN: usize = 8;
/// Total length of a key.
pub const KEY_LEN: usize = PREFIX_LEN + BODY_LEN + CHECKSUM_LEN;
/// Characters of the body kept, after the prefix, as the key's public label.
pub const DISPLAY_CHARS: usize = 4;

/// Why a presented string is not a well-formed key. No lookup was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the API key does not start with `tg_live_` or `tg_test_`")]
    Prefix,
    #[error("the API key has the wrong length or characters")]
    Shape,
    #[error("the API key's checksum does not match; it was mistyped or truncated")]
    Checksum,
}

/// A key that passed the format and checksum checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WellFormed<'a> {
    pub key: &'a str,
    pub environment: KeyEnvironment,
}

impl WellFormed<'_> {
    /// The public label shown in listings: prefix plus a few characters.
    pub fn display_prefix(&self) -> String {
        display_prefix(self.key)
    }
}

/// A freshly generated key. The secret is shown once and never stored.
pub struct NewKey {
    pub secret: String,
    pub environment: KeyEnvironment,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("secret", &"<redacted>")
            .field("display_prefix", &display_prefix(&self.secret))
            .finish()
    }
}

fn env_prefix(env: KeyEnvironment) -> &'static str {
    match env {
        KeyEnvironment::Live => "tg_live_",
        KeyEnvironment::Test => "tg_test_",
    }
}

fn checksum(head: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(head.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Random base62 characters from the operating system's generator, without
/// modulo bias (bytes of 248 and above are redrawn).
fn random_base62(n: usize) -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        rng.fill(&mut buf)?;
        for b in buf {
            if b < 248 && out.len() < n {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// Generates a new key for `environment`.
pub fn generate(environment: KeyEnvironment) -> Result<NewKey, ring::error::Unspecified> {
    let mut secret = String::with_capacity(KEY_LEN);
    secret.push_str(env_prefix(environment));
    secret.push_str(&random_base62(BODY_LEN)?);
    let sum = checksum(&secret);
    secret.extend(sum.iter().map(|&b| b as char));
    Ok(NewKey {
        secret,
        environment,
    })
}

/// Checks the shape and checksum of a presented key. Costs a CRC-32 of 32
/// bytes and no lookup.
pub fn parse(key: &str) -> Result<WellFormed<'_>, KeyFormatError> {
    let environment = if key.starts_with("tg_live_") {
        KeyEnvironment::Live
    } else if key.starts_with("tg_test_") {
        KeyEnvironment::Test
    } else {
        return Err(KeyFormatError::Prefix);
    };
    if key.len() != KEY_LEN || !key[PREFIX_LEN..].bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Shape);
    }
    let (head, sum) = key.split_at(KEY_LEN - CHECKSUM_LEN);
    if checksum(head).ct_eq(sum.as_bytes()).unwrap_u8() != 1 {
        return Err(KeyFormatError::Checksum);
    }
    Ok(WellFormed { key, environment })
}

/// Whether `s` looks like a Tollgate key at all (for telling keys from JWTs).
pub fn looks_like_key(s: &str) -> bool {
    s.starts_with("tg_live_") || s.starts_with("tg_test_")
}

/// The public label of a key: `tg_live_` and the first characters of the body.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(PREFIX_LEN + DISPLAY_CHARS).collect()
}

/// The stored form of a key: HMAC-SHA-256 under the pepper. Equality is
/// constant-time.
#[derive(Clone, Copy, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        // Constant time: the four words' differences are folded together with
        // no branch on them, and only the folded word is compared (with
        // `subtle`). A byte-wise `ct_eq` over the array cost ~100
        // instructions per lookup.
        let word = |h: &[u8; 32], i: usize| {
            u64::from_ne_bytes(h[i * 8..i * 8 + 8].try_into().unwrap_or_default())
        };
        let diff = (0..4).fold(0u64, |d, i| d | (word(&self.0, i) ^ word(&other.0, i)));
        diff.ct_eq(&0).into()
    }
}

impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The value is already uniformly distributed.
        state.write(&self.0[..8]);
    }
}

/// The hasher of maps keyed by [`KeyHash`]: the hash's first eight bytes as
/// they are. They are an HMAC under the secret pepper, so uniform and not
/// something a client can steer into collisions; SipHash over them added
/// nothing but ~50 instructions per lookup.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHashHasher(u64);

impl std::hash::Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_ne_bytes(word);
        }
    }
}

/// Builds [`KeyHashHasher`]s.
pub type KeyHashBuild = std::hash::BuildHasherDefault<KeyHashHasher>;

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

/// The server-side secret mixed into every key hash. It lives outside the
/// database (a setting or a file in the data directory), so the database
/// alone does not let anyone test guessed keys.
#[derive(Clone)]
pub struct Pepper(Hmac<Sha256>);

/// The shortest pepper accepted, in bytes.
pub const MIN_PEPPER_LEN: usize = 32;

impl Pepper {
    /// A pepper from its secret bytes; at least [`MIN_PEPPER_LEN`] of them.
    pub fn new(secret: &[u8]) -> Result<Pepper, String> {
        if secret.len() < MIN_PEPPER_LEN {
            return Err(format!(
                "the key pepper must be at least {MIN_PEPPER_LEN} bytes, got {}",
                secret.len()
            ));
        }
        Hmac::<Sha256>::new_from_slice(secret)
            .map(Pepper)
            .map_err(|e| e.to_string())
    }

    /// A fresh random pepper.
    pub fn random() -> Result<Pepper, ring::error::Unspecified> {
        let text = Pepper::generate_text()?;
        Pepper::new(text.as_bytes()).map_err(|_| ring::error::Unspecified)
    }

    /// A fresh random pepper, as the text to store (64 hex characters).
    pub fn generate_text() -> Result<String, ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut bytes)?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The hash stored for `key`.
    pub fn hash(&self, key: &str) -> KeyHash {
        let mut mac = self.0.clone();
        mac.update(key.as_bytes());
        KeyHash(mac.finalize().into_bytes().into())
    }

    /// A public fingerprint of the pepper. Nodes sharing a database compare
    /// it at start so that one with a different pepper refuses to run
    /// instead of rejecting every key.
    pub fn fingerprint(&self) -> String {
        let h = self.hash("tollgate pepper fingerprint v1");
        h.0[..12].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_are_equal_only_when_every_byte_is() {
        let a = KeyHash([7u8; 32]);
        assert_eq!(a, KeyHash([7u8; 32]));
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = [7u8; 32];
                b[i] ^= 1 << bit;
                assert_ne!(a, KeyHash(b), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn generated_keys_parse_and_carry_their_environment() {
        for env in [KeyEnvironment::Live, KeyEnvironment::Test] {
            let k = generate(env).expect("rng");
            assert_eq!(k.secret.len(), KEY_LEN);
            let parsed = parse(&k.secret).expect("well formed");
            assert_eq!(parsed.environment, env);
            assert!(k.secret.starts_with(&format!("tg_{}_", env.as_str())));
            assert_eq!(parsed.display_prefix().len(), PREFIX_LEN + DISPLAY_CHARS);
        }
    }

    #[test]
    fn the_body_carries_at_least_128_random_bits() {
        let bits = (BODY_LEN as f64) * 62f64.log2();
        assert!(bits >= 128.0, "{bits}");
        let a = generate(KeyEnvironment::Live).expect("rng").secret;
        let b = generate(KeyEnvironment::Live).expect("rng").secret;
        assert_ne!(a, b);
    }

    #[test]
    fn every_single_character_typo_is_caught_by_the_checksum() {
        let key = generate(KeyEnvironment::Live).expect("rng").secret;
        for i in PREFIX_LEN..KEY_LEN {
            for &c in BASE62.iter() {
                if key.as_bytes()[i] == c {
                    continue;
                }
                let mut typo = key.clone().into_bytes();
                typo[i] = c;
                let typo = String::from_utf8(typo).expect("ascii");
                assert_eq!(parse(&typo), Err(KeyFormatError::Checksum), "{i}");
            }
        }
    }

    #[test]
    fn malformed_keys_are_refused_by_shape() {
        let key = generate(KeyEnvironment::Test).expect("rng").secret;
        assert_eq!(parse("tg_prod_abc"), Err(KeyFormatError::Prefix));
        assert_eq!(parse("sk_live_abc"), Err(KeyFormatError::Prefix));
        assert_eq!(parse(&key[..KEY_LEN - 1]), Err(KeyFormatError::Shape));
        assert_eq!(parse(&format!("{key}0")), Err(KeyFormatError::Shape));
        let mut bad = key.clone();
        bad.replace_range(10..11, "-");
        assert_eq!(parse(&bad), Err(KeyFormatError::Shape));
        // Switching the environment invalidates the checksum.
        let swapped = key.replacen("tg_test_", "tg_live_", 1);
        assert_eq!(parse(&swapped), Err(KeyFormatError::Checksum));
    }

    #[test]
    fn hashes_depend_on_the_pepper_and_debug_output_hides_secrets() {
        let p1 = Pepper::new(&[1u8; 32]).expect("pepper");
        let p2 = Pepper::new(&[2u8; 32]).expect("pepper");
        let k = generate(KeyEnvironment::Live).expect("rng");
        assert_eq!(p1.hash(&k.secret), p1.hash(&k.secret));
        assert!(p1.hash(&k.secret) != p2.hash(&k.secret));
        assert_ne!(p1.fingerprint(), p2.fingerprint());
        assert!(Pepper::new(&[0u8; 31]).is_err());
        let shown = format!("{k:?} {:?} {p1:?}", p1.hash(&k.secret));
        assert!(!shown.contains(&k.secret[PREFIX_LEN..]), "{shown}");
    }
}
