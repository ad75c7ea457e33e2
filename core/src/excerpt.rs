//! Outside input quoted in error messages is cut short: a 100,000-character
//! `to_address` makes a readable error, not a 100,000-character one.

use std::borrow::Cow;

/// How many characters of an input an error message quotes.
pub const QUOTED_CHARACTERS: usize = 64;

/// `text` as an error message quotes it: whole when short, else its first
/// [`QUOTED_CHARACTERS`] characters, "…" and how long it was.
pub fn excerpt(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(QUOTED_CHARACTERS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!(
            "{}… ({} characters)",
            &text[..end],
            text.chars().count()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole_and_long_text_is_cut_at_a_character() {
        assert_eq!(excerpt("+31612345678"), "+31612345678");
        let exact = "é".repeat(QUOTED_CHARACTERS);
        assert_eq!(excerpt(&exact), exact.as_str());
        let long = "é".repeat(100_000);
        let cut = excerpt(&long);
        assert_eq!(
            cut,
            format!("{}… (100000 characters)", "é".repeat(QUOTED_CHARACTERS))
        );
    }
}
