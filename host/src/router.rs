//! Subscription patterns: which message kinds a plugin receives. A pattern is a
//! dot-separated kind where `*` matches exactly one word and `#` zero or more words,
//! as in AMQP topic exchanges (`order.*`, `order.#`, `#`).

/// Does `kind` match the subscription `pattern`?
pub fn matches(pattern: &str, kind: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let kind: Vec<&str> = kind.split('.').collect();
    match_words(&pattern, &kind)
}

fn match_words(pattern: &[&str], kind: &[&str]) -> bool {
    match (pattern.split_first(), kind.split_first()) {
        (None, None) => true,
        (Some((&"#", rest)), _) => {
            match_words(rest, kind) || (!kind.is_empty() && match_words(pattern, &kind[1..]))
        }
        (Some((&"*", rest)), Some((_, kind_rest))) => match_words(rest, kind_rest),
        (Some((word, rest)), Some((k, kind_rest))) => word == k && match_words(rest, kind_rest),
        _ => false,
    }
}

/// Is `pattern` a well-formed subscription (non-empty words, wildcards as whole words)?
pub fn is_valid_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.split('.').all(|w| {
            !w.is_empty() && (w == "*" || w == "#" || !(w.contains('*') || w.contains('#')))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_matches() {
        assert!(matches("order.created", "order.created"));
        assert!(!matches("order.created", "order.updated"));
        assert!(matches("order.*", "order.created"));
        assert!(!matches("order.*", "order.created.eu"));
        assert!(matches("order.#", "order.created.eu"));
        assert!(matches("order.#", "order"));
        assert!(matches("#", "anything.at.all"));
        assert!(matches("*.created", "user.created"));
        assert!(!matches("*.created", "created"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert!(is_valid_pattern("order.*"));
        assert!(!is_valid_pattern(""));
        assert!(!is_valid_pattern("order..created"));
        assert!(!is_valid_pattern("order.cre*"));
    }
}
