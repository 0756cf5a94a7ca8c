//! Loop API tokens: format, minting, checksum verification, hashing and fingerprints.
//!
//! Pure code; the only I/O is reading the OS CSPRNG when minting.
//!
//! Format (DESIGN.md §3): `loop_` + 36 base62 characters from the OS CSPRNG (36 × log2 62 ≈ 214
//! bits of entropy) + 6 base62 characters of CRC32 over everything before them. That is a fixed
//! 47 bytes: under one SHA-256 block (55 bytes), and only `[A-Za-z0-9_]`, so safe in headers,
//! URLs and env files. The checksum lets secret scanners and the store reject a mistyped or made
//! up token without a lookup; it is not a security boundary (CRC32 is public).
//!
//! The plaintext type [`Token`] never prints itself: its `Debug` and `Display` show only the
//! fingerprint, so a token that slips into a log line or an error message leaks nothing.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every Loop token starts with this prefix.
pub const PREFIX: &str = "loop_";
/// Number of random base62 characters.
pub const RANDOM_LEN: usize = 36;
/// Number of base62 characters of the CRC32 checksum (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// Total length of a token in bytes.
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// Prefix of the textual form of a token hash.
pub const HASH_PREFIX: &str = "sha256:";
/// Hex characters of the hash kept in a fingerprint.
const FINGERPRINT_HEX_LEN: usize = 12;

// DESIGN.md §3: fits one SHA-256 block, and at least 192 bits of entropy
// (62^36 > 2^214; checked as 36 × 5954 ≥ 192 × 1000 with log2(62) ≥ 5.954).
const _: () = assert!(TOKEN_LEN <= 55);
const _: () = assert!(RANDOM_LEN * 5954 >= 192 * 1000);

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed Loop token. Never carries the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("a Loop token is {TOKEN_LEN} characters long")]
    Length,
    #[error("a Loop token starts with \"{PREFIX}\"")]
    Prefix,
    #[error("a Loop token holds only base62 characters after its prefix")]
    Alphabet,
    #[error("the token's checksum does not match (mistyped or not a Loop token)")]
    Checksum,
}

/// The OS random source failed; minting is impossible.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct MintError(getrandom::Error);

/// A token's plaintext. Only [`Token::expose`] reveals it; formatting shows the fingerprint.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Mint a new token from the OS CSPRNG.
    pub fn mint() -> Result<Self, MintError> {
        let mut out = String::with_capacity(TOKEN_LEN);
        out.push_str(PREFIX);
        // Rejection sampling keeps every base62 character equally likely: bytes >= 248 are
        // dropped because 248 = 4 × 62 is the largest multiple of 62 that fits in a byte.
        let mut buf = [0u8; 64];
        while out.len() < PREFIX.len() + RANDOM_LEN {
            getrandom::fill(&mut buf).map_err(MintError)?;
            for b in buf {
                if out.len() == PREFIX.len() + RANDOM_LEN {
                    break;
                }
                if b < 248 {
                    out.push(char::from(BASE62[usize::from(b % 62)]));
                }
            }
        }
        let checksum = checksum(&out);
        out.push_str(&checksum);
        Ok(Token(out))
    }

    /// Parse and checksum-verify a presented token.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        verify(s)?;
        Ok(Token(s.to_owned()))
    }

    /// The plaintext. Call only where the plaintext must go: the Secret, or a test.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the plaintext, the only form the store ever sees.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    /// Short, non-secret identifier of this token.
    pub fn fingerprint(&self) -> String {
        self.hash().fingerprint()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.fingerprint())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<token {}>", self.fingerprint())
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Token {}

/// Check a presented token's shape and checksum without allocating.
pub fn verify(s: &str) -> Result<(), ParseError> {
    if s.len() != TOKEN_LEN {
        return Err(ParseError::Length);
    }
    let Some(rest) = s.strip_prefix(PREFIX) else {
        return Err(ParseError::Prefix);
    };
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ParseError::Alphabet);
    }
    let (body, sum) = s.split_at(TOKEN_LEN - CHECKSUM_LEN);
    let expected = checksum(body);
    if expected.as_bytes().ct_eq(sum.as_bytes()).into() {
        Ok(())
    } else {
        Err(ParseError::Checksum)
    }
}

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// `sha256:<64 lowercase hex>`: the stored form of a token.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenHash(String);

/// A string that is not `sha256:` followed by 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token hash is \"sha256:\" followed by 64 lowercase hex characters")]
pub struct HashFormatError;

impl TokenHash {
    /// Hash a plaintext. Callers normally go through [`Token::hash`]; introspection hashes the
    /// presented string after [`verify`] accepted it.
    pub fn of(plaintext: &str) -> Self {
        let digest = Sha256::digest(plaintext.as_bytes());
        let mut s = String::with_capacity(HASH_PREFIX.len() + 64);
        s.push_str(HASH_PREFIX);
        for b in digest.iter() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        TokenHash(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits of the hash: short, stable, and useless to an attacker (a
    /// 48-bit slice of the SHA-256 of a 214-bit random value).
    pub fn fingerprint(&self) -> String {
        let hex = &self.0[HASH_PREFIX.len()..];
        hex[..FINGERPRINT_HEX_LEN].to_owned()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl TryFrom<String> for TokenHash {
    type Error = HashFormatError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let hex = s.strip_prefix(HASH_PREFIX).ok_or(HashFormatError)?;
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(TokenHash(s))
        } else {
            Err(HashFormatError)
        }
    }
}

impl std::str::FromStr for TokenHash {
    type Err = HashFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TokenHash::try_from(s.to_owned())
    }
}

impl From<TokenHash> for String {
    fn from(h: TokenHash) -> String {
        h.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.0)
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minted_tokens_have_the_documented_shape() {
        let t = Token::mint().unwrap();
        let s = t.expose();
        assert_eq!(s.len(), TOKEN_LEN);
        assert!(s.starts_with("loop_"));
        assert!(s[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(verify(s), Ok(()));
    }

    #[test]
    fn minted_tokens_differ() {
        let a = Token::mint().unwrap();
        let b = Token::mint().unwrap();
        assert_ne!(a, b);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn formatting_never_shows_the_plaintext() {
        let t = Token::mint().unwrap();
        let secret = t.expose().to_owned();
        for shown in [format!("{t}"), format!("{t:?}"), format!("{:#?}", Some(&t))] {
            assert!(!shown.contains(&secret), "{shown}");
            assert!(!shown.contains(&secret[PREFIX.len()..PREFIX.len() + 8]));
            assert!(shown.contains(&t.fingerprint()));
        }
    }

    #[test]
    fn hash_is_sha256_hex() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            TokenHash::of("abc").as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(TokenHash::of("abc").fingerprint(), "ba7816bf8f01");
    }

    #[test]
    fn hash_parsing_rejects_bad_forms() {
        let good = TokenHash::of("x").to_string();
        assert!(good.parse::<TokenHash>().is_ok());
        assert!(good.to_uppercase().parse::<TokenHash>().is_err());
        assert!(good[..good.len() - 1].parse::<TokenHash>().is_err());
        assert!(
            good.replace("sha256:", "md5:")
                .parse::<TokenHash>()
                .is_err()
        );
        assert!("sha256:".parse::<TokenHash>().is_err());
    }

    #[test]
    fn parse_errors_are_specific() {
        let t = Token::mint().unwrap();
        let s = t.expose();
        assert_eq!(verify(&s[1..]), Err(ParseError::Length));
        assert_eq!(
            verify(&format!("LOOP_{}", &s[5..])),
            Err(ParseError::Prefix)
        );
        assert_eq!(
            verify(&format!("{}-{}", &s[..10], &s[11..])),
            Err(ParseError::Alphabet)
        );
        assert_eq!(verify(""), Err(ParseError::Length));
        // An error message never contains the input.
        let e = Token::parse(&format!("{}X", &s[..s.len() - 1]))
            .map(|_| ())
            .unwrap_err();
        assert!(!e.to_string().contains(&s[5..20]));
    }

    fn base62_char() -> impl Strategy<Value = char> {
        proptest::sample::select(BASE62.iter().map(|&b| char::from(b)).collect::<Vec<_>>())
    }

    proptest! {
        #[test]
        fn any_random_body_with_its_checksum_round_trips(body in proptest::collection::vec(base62_char(), RANDOM_LEN)) {
            let mut s = String::from(PREFIX);
            s.extend(body);
            let sum = checksum(&s);
            s.push_str(&sum);
            let t = Token::parse(&s).unwrap();
            prop_assert_eq!(t.expose(), s.as_str());
            prop_assert_eq!(t.hash(), TokenHash::of(&s));
            let h: TokenHash = t.hash().to_string().parse().unwrap();
            prop_assert_eq!(h, t.hash());
        }

        #[test]
        fn changing_any_one_character_breaks_the_checksum(pos in PREFIX.len()..TOKEN_LEN, c in base62_char()) {
            let t = Token::mint().unwrap();
            let mut bytes = t.expose().as_bytes().to_vec();
            prop_assume!(bytes[pos] != c as u8);
            bytes[pos] = c as u8;
            let s = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(verify(&s), Err(ParseError::Checksum));
        }

        #[test]
        fn arbitrary_strings_never_panic_and_are_rejected_unless_valid(s in ".{0,80}") {
            // Either rejected, or a genuinely well-formed token (astronomically unlikely).
            if verify(&s).is_ok() {
                prop_assert_eq!(s.len(), TOKEN_LEN);
            }
        }

        #[test]
        fn swapping_two_characters_is_detected(i in PREFIX.len()..TOKEN_LEN - CHECKSUM_LEN, j in PREFIX.len()..TOKEN_LEN - CHECKSUM_LEN) {
            let t = Token::mint().unwrap();
            let mut bytes = t.expose().as_bytes().to_vec();
            prop_assume!(bytes[i] != bytes[j]);
            bytes.swap(i, j);
            let s = String::from_utf8(bytes).unwrap();
            prop_assert!(verify(&s).is_err());
        }
    }
}
