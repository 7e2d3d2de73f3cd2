//! Text that comes from outside the host (what a plugin returns, logs or prints, what a
//! client or a broker sends): bounded before it is kept, and its control characters
//! escaped before it reaches a log line, a header or a terminal, so no plugin can forge a
//! log line, move a cursor or fill a disk with one reason.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character (C0, DEL, C1; line breaks and tabs too) written as
/// a Rust escape (`\n`, `\t`, `\u{1b}`): one line, printable as it is. Escaping twice
/// changes nothing more (a reason escaped when it was kept is shown as it is).
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(escaped, "\\u{{{:x}}}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// `text` cut to at most `max_bytes` (at a character boundary), with a marker saying how
/// much was cut; the marker fits within `max_bytes` too when `max_bytes` leaves room for it.
pub fn bounded(mut text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let total = text.len();
    let marker = |kept: usize| format!("... [cut: {} of {total} bytes]", total - kept);
    let room = max_bytes.saturating_sub(marker(0).len());
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&marker(end));
    text
}

/// [`escape_controls`] and then [`bounded`]: a plugin's reason as it is kept and shown.
pub fn reason(text: &str, max_bytes: usize) -> String {
    bounded(escape_controls(text).into_owned(), max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(
            escape_controls("plain text: ok"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("a\n2026-12-02T10:00:00Z ERROR forged\r\t\u{1b}[31mred\u{7f}\u{9b}"),
            "a\\n2026-12-02T10:00:00Z ERROR forged\\r\\t\\u{1b}[31mred\\u{7f}\\u{9b}"
        );
        let once = escape_controls("a\nb").into_owned();
        assert_eq!(
            escape_controls(&once),
            once,
            "escaping again changes nothing"
        );
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary_with_a_marker() {
        assert_eq!(bounded("short".into(), 100), "short");
        let long = "é".repeat(3000);
        let cut = bounded(long, 1000);
        assert!(cut.len() <= 1000, "{}", cut.len());
        assert!(cut.ends_with(" of 6000 bytes]"), "{cut}");
        assert!(cut.starts_with("éé"));
        let kept = cut.split("...").next().unwrap().len();
        assert!(
            cut.contains(&format!("[cut: {} of 6000", 6000 - kept)),
            "{cut}"
        );
    }

    #[test]
    fn a_reason_is_one_bounded_line() {
        let reason = reason(&format!("R{}", "\n".repeat(10_000)), 256);
        assert!(reason.len() <= 256 && !reason.contains('\n'), "{reason}");
    }
}
