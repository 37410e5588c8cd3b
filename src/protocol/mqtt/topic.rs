//! Topic names and topic filters (MQTT 3.1.1 §4.7): validation and the reference matcher.
//!
//! A topic name is what a PUBLISH is sent to; a topic filter is what a SUBSCRIBE asks for and
//! may hold the wildcards `+` (exactly one level) and `#` (this level and every level below).
//! Levels are separated by `/`, and an empty level is a real level: `a//b` has three levels,
//! `/a` has two.
//!
//! [`filter_matches`] is the naive reference the broker's topic trie is differentially tested
//! against, so it favours being obviously right over being fast.

use super::decode::DecodeLimits;
use super::error::DecodeError;

const LEVEL_SEPARATOR: char = '/';
const SINGLE_LEVEL_WILDCARD: &str = "+";
const MULTI_LEVEL_WILDCARD: &str = "#";

/// Checks a topic name from a PUBLISH or a will: non-empty, no wildcard, within the limits.
pub fn validate_topic_name(name: &str, limits: &DecodeLimits) -> Result<(), DecodeError> {
    validate_common(name, limits)?;
    // [MQTT-3.3.2-2]: wildcards belong to filters only.
    if name.contains(['+', '#']) {
        return Err(DecodeError::InvalidTopicName);
    }
    Ok(())
}

/// Checks a topic filter from a SUBSCRIBE or UNSUBSCRIBE: non-empty, wildcards in place,
/// within the limits.
pub fn validate_topic_filter(filter: &str, limits: &DecodeLimits) -> Result<(), DecodeError> {
    validate_common(filter, limits)?;
    if !wildcards_in_place(filter) {
        return Err(DecodeError::InvalidTopicFilter);
    }
    Ok(())
}

/// Whether `name` is a topic name the decoder would accept under some limits.
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', '#', '\0'])
}

/// Whether `filter` is a topic filter the decoder would accept under some limits.
pub fn is_valid_topic_filter(filter: &str) -> bool {
    !filter.is_empty() && !filter.contains('\0') && wildcards_in_place(filter)
}

/// Whether the topic filter `filter` matches the topic name `name` (§4.7).
///
/// Both are assumed valid. `+` matches exactly one level, which may be empty; `#` matches its
/// parent level and every level below it, so `a/#` matches `a` ([MQTT-4.7.1-2]). A name
/// starting with `$` is not matched by a filter starting with a wildcard ([MQTT-4.7.2-1]).
pub fn filter_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut name_levels = name.split(LEVEL_SEPARATOR);
    for filter_level in filter.split(LEVEL_SEPARATOR) {
        if filter_level == MULTI_LEVEL_WILDCARD {
            return true;
        }
        match name_levels.next() {
            None => return false,
            Some(name_level) => {
                if filter_level != SINGLE_LEVEL_WILDCARD && filter_level != name_level {
                    return false;
                }
            }
        }
    }
    // Every filter level matched one name level; the name must have no levels left over.
    name_levels.next().is_none()
}

fn validate_common(topic: &str, limits: &DecodeLimits) -> Result<(), DecodeError> {
    // [MQTT-4.7.3-1]
    if topic.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    if topic.len() > usize::from(limits.topic_bytes_max) {
        return Err(DecodeError::TopicTooLong);
    }
    // Strings from the wire were checked already; this catches other callers [MQTT-1.5.3-2].
    if topic.contains('\0') {
        return Err(DecodeError::NullCharacter);
    }
    let levels = topic.split(LEVEL_SEPARATOR).count();
    if levels > usize::from(limits.topic_levels_max) {
        return Err(DecodeError::TooManyTopicLevels);
    }
    Ok(())
}

/// `#` only as a whole last level, `+` only as a whole level ([MQTT-4.7.1-2], [MQTT-4.7.1-3]).
fn wildcards_in_place(filter: &str) -> bool {
    let mut levels = filter.split(LEVEL_SEPARATOR).peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains('#') && !(level == MULTI_LEVEL_WILDCARD && is_last) {
            return false;
        }
        if level.contains('+') && level != SINGLE_LEVEL_WILDCARD {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> DecodeLimits {
        DecodeLimits {
            packet_bytes_max: 1024 * 1024,
            topic_bytes_max: 64,
            topic_levels_max: 8,
            client_id_bytes_max: 64,
            filters_per_packet_max: 16,
        }
    }

    #[test]
    fn topic_names() {
        let l = limits();
        for ok in [
            "a",
            "/",
            "a/b",
            "a//b",
            "/a",
            "a/",
            "$SYS/x",
            " ",
            "sport/tennis/player1",
        ] {
            assert_eq!(validate_topic_name(ok, &l), Ok(()), "{ok:?}");
        }
        assert_eq!(validate_topic_name("", &l), Err(DecodeError::EmptyTopic));
        for bad in ["+", "#", "a/+", "a/#", "a+b", "sport/tennis#"] {
            assert_eq!(
                validate_topic_name(bad, &l),
                Err(DecodeError::InvalidTopicName),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate_topic_name("a\0b", &l),
            Err(DecodeError::NullCharacter)
        );
    }

    #[test]
    fn topic_filters() {
        let l = limits();
        // §4.7.1.2 and §4.7.1.3 examples of valid filters.
        for ok in [
            "#",
            "sport/tennis/#",
            "+",
            "+/tennis/#",
            "sport/+/player1",
            "/+",
            "+/+",
            "a//b",
            "$SYS/#",
        ] {
            assert_eq!(validate_topic_filter(ok, &l), Ok(()), "{ok:?}");
        }
        assert_eq!(validate_topic_filter("", &l), Err(DecodeError::EmptyTopic));
        // §4.7.1.2 and §4.7.1.3 examples of invalid filters.
        for bad in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "sport+",
            "#/a",
            "a/b+/c",
            "##",
        ] {
            assert_eq!(
                validate_topic_filter(bad, &l),
                Err(DecodeError::InvalidTopicFilter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn topic_limits() {
        let l = limits();
        let long = "a".repeat(65);
        assert_eq!(
            validate_topic_name(&long, &l),
            Err(DecodeError::TopicTooLong)
        );
        assert_eq!(
            validate_topic_filter(&long, &l),
            Err(DecodeError::TopicTooLong)
        );
        assert_eq!(validate_topic_name(&"a".repeat(64), &l), Ok(()));
        // Eight levels fit, nine do not; empty levels count.
        assert_eq!(validate_topic_name("a/b/c/d/e/f/g/h", &l), Ok(()));
        assert_eq!(validate_topic_name("///////", &l), Ok(()));
        assert_eq!(
            validate_topic_name("////////", &l),
            Err(DecodeError::TooManyTopicLevels)
        );
        assert_eq!(
            validate_topic_filter("+/+/+/+/+/+/+/+/#", &l),
            Err(DecodeError::TooManyTopicLevels)
        );
    }

    #[test]
    fn multi_level_wildcard_examples() {
        // §4.7.1.2: "sport/tennis/player1/#" matches these.
        let f = "sport/tennis/player1/#";
        assert!(filter_matches(f, "sport/tennis/player1"));
        assert!(filter_matches(f, "sport/tennis/player1/ranking"));
        assert!(filter_matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!filter_matches(f, "sport/tennis/player2"));
        assert!(!filter_matches(f, "sport/tennis"));
        // "sport/#" also matches the singular "sport".
        assert!(filter_matches("sport/#", "sport"));
        assert!(filter_matches("sport/#", "sport/"));
        assert!(!filter_matches("sport/#", "sports"));
        assert!(filter_matches("#", "a/b/c"));
        assert!(filter_matches("#", "/"));
    }

    #[test]
    fn single_level_wildcard_examples() {
        // §4.7.1.3.
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!filter_matches(
            "sport/tennis/+",
            "sport/tennis/player1/ranking"
        ));
        assert!(!filter_matches("sport/+", "sport"));
        assert!(filter_matches("sport/+", "sport/"));
        assert!(filter_matches("+/+", "/finance"));
        assert!(filter_matches("/+", "/finance"));
        assert!(!filter_matches("+", "/finance"));
        assert!(filter_matches("+/tennis/#", "sport/tennis"));
        assert!(filter_matches("sport/+/player1", "sport/tennis/player1"));
    }

    #[test]
    fn dollar_topics() {
        // §4.7.2 [MQTT-4.7.2-1].
        assert!(!filter_matches("#", "$SYS/monitor/Clients"));
        assert!(!filter_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(filter_matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(filter_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(filter_matches("$SYS/#", "$SYS"));
        // Only a leading `$` is special.
        assert!(filter_matches("#", "a/$SYS"));
        assert!(filter_matches("+/$x", "a/$x"));
    }

    #[test]
    fn empty_levels_are_levels() {
        assert!(filter_matches("a//b", "a//b"));
        assert!(!filter_matches("a/b", "a//b"));
        assert!(filter_matches("a/+/b", "a//b"));
        assert!(filter_matches("/a", "/a"));
        assert!(!filter_matches("a", "/a"));
        assert!(filter_matches("+/a", "/a"));
        assert!(filter_matches("a/+", "a/"));
        assert!(!filter_matches("a", "a/"));
        assert!(filter_matches("a/#", "a/"));
    }

    #[test]
    fn exact_and_case_sensitive() {
        // §4.7.3: topics are case sensitive and may contain spaces.
        assert!(filter_matches("ACCOUNTS", "ACCOUNTS"));
        assert!(!filter_matches("ACCOUNTS", "Accounts"));
        assert!(filter_matches("Accounts payable", "Accounts payable"));
        assert!(!filter_matches("a/b", "a/b/c"));
        assert!(!filter_matches("a/b/c", "a/b"));
    }

    proptest! {
        #[test]
        fn a_name_matches_itself_and_hash(name in "[a-c/$]{1,12}") {
            prop_assume!(is_valid_topic_name(&name));
            prop_assert!(filter_matches(&name, &name));
            prop_assert_eq!(filter_matches("#", &name), !name.starts_with('$'));
        }

        #[test]
        fn plus_matches_one_level_only(name in "[a-c/]{1,12}") {
            let levels = name.split('/').count();
            let filter = vec!["+"; levels].join("/");
            prop_assert!(filter_matches(&filter, &name));
            let longer = format!("{filter}/+");
            prop_assert!(!filter_matches(&longer, &name));
        }
    }
}
