//! Secrets: device tokens and the admin key, from the operating system's random source, and
//! their comparison in constant time.

/// The characters of a token, Blynk's alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// A new random string of `len` characters from [`ALPHABET`].
pub fn random_string(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    // Without a random source no secret can be made safely; this is not recoverable.
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    bytes
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(byte & 63)]))
        .collect()
}

/// A new device token: 32 characters, Blynk's format.
pub fn new_token() -> String {
    random_string(blynk_proto::TOKEN_LEN)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_blynk_format_and_differ() {
        let (first, second) = (new_token(), new_token());
        assert!(blynk_proto::text::is_token(&first));
        assert_ne!(first, second);
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
