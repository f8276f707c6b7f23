//! Secrets: device tokens and the admin key, from the operating system's random source.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_blynk_format_and_differ() {
        let (first, second) = (new_token(), new_token());
        assert!(blynk_proto::text::is_token(&first));
        assert_ne!(first, second);
    }
}
