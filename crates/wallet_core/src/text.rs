//! Text that came from a caller, as bytes.
//!
//! A Postgres `text` value is valid in the database encoding, which need not be UTF-8 (LATIN1,
//! or SQL_ASCII, which lets any bytes through). The rules compare and hash such values as bytes;
//! a message shows them as they are when they are valid UTF-8 (always so in a UTF-8 database, and
//! then the very same bytes are valid in any other encoding too), and escapes every other byte as
//! `\xNN`, so a message is valid in every server encoding.

use std::fmt;

/// Bytes a caller gave, shown safely in messages.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(pub Vec<u8>);

impl Text {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for Text {
    fn from(bytes: &[u8]) -> Self {
        Text(bytes.to_vec())
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text(text.as_bytes().to_vec())
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) => f.write_str(text),
            Err(_) => {
                for &byte in &self.0 {
                    if byte.is_ascii() {
                        write!(f, "{}", byte as char)?;
                    } else {
                        write!(f, "\\x{byte:02x}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_shown_as_it_is_and_anything_else_escaped() {
        assert_eq!(Text::from("order-é").to_string(), "order-é");
        assert_eq!(Text(vec![b'k', 0xe9, b'!']).to_string(), "k\\xe9!");
        // An escaped message is plain ASCII: valid in every server encoding.
        assert!(Text(vec![0xff, 0xfe, 0x80]).to_string().is_ascii());
    }
}
