//! MQTT topics and filters as NATS subjects, mapped exactly as nats-server's own MQTT support
//! maps them, so fanfare's clients, nats-server's MQTT clients and native NATS publishers
//! share one subject space.
//!
//! Each MQTT level becomes one NATS token:
//! - the separator `/` becomes `.`;
//! - in a filter, `+` becomes `*` and `#` becomes `>`;
//! - an empty level (a leading, trailing or doubled `/`) becomes the token `/`, since NATS has
//!   no empty tokens;
//! - a `.` inside a level becomes `//`;
//! - whitespace and DEL are refused: they would split or corrupt the NATS protocol line.
//!
//! A subject read back turns `/.` into `/`, `//` into `.` and `.` into `/`, and drops any other
//! `/`; for every subject made from a topic, that is the topic again.

use std::fmt::Write as _;

/// Why a topic or filter has no subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectError {
    /// A space, tab, CR, LF, FF or DEL: nats-server refuses them in MQTT topics too.
    UnsupportedCharacter,
    /// A wildcard in a topic name [MQTT-3.3.2-2].
    WildcardInTopic,
    /// The empty topic or filter [MQTT-4.7.3-1].
    Empty,
}

/// The NATS subject of the MQTT topic name `topic`, under `prefix` (no prefix when empty).
pub fn topic_to_subject(prefix: &str, topic: &str) -> Result<String, SubjectError> {
    convert(prefix, topic, false)
}

/// The NATS subject of the MQTT topic filter `filter`, under `prefix`.
pub fn filter_to_subject(prefix: &str, filter: &str) -> Result<String, SubjectError> {
    convert(prefix, filter, true)
}

/// The subjects to subscribe to for `filter`: its own, and for a filter ending in `/#` its
/// parent's too, because MQTT's `#` matches the parent level [MQTT-4.7.1-2] and NATS's `>`
/// matches one token or more. (`/#` has no parent: the empty topic does not exist.)
pub fn filter_subjects(prefix: &str, filter: &str) -> Result<Vec<String>, SubjectError> {
    let mut subjects = vec![filter_to_subject(prefix, filter)?];
    if let Some(parent) = filter
        .strip_suffix("/#")
        .filter(|parent| !parent.is_empty())
    {
        subjects.push(filter_to_subject(prefix, parent)?);
    }
    Ok(subjects)
}

fn convert(prefix: &str, mqtt: &str, wildcards_allowed: bool) -> Result<String, SubjectError> {
    if mqtt.is_empty() {
        return Err(SubjectError::Empty);
    }
    let mut subject = String::with_capacity(prefix.len() + mqtt.len() + 8);
    if !prefix.is_empty() {
        subject.push_str(prefix);
        subject.push('.');
    }
    for (index, level) in mqtt.split('/').enumerate() {
        if index > 0 {
            subject.push('.');
        }
        if level.is_empty() {
            subject.push('/');
            continue;
        }
        for c in level.chars() {
            match c {
                ' ' | '\t' | '\n' | '\r' | '\x0c' | '\x7f' => {
                    return Err(SubjectError::UnsupportedCharacter);
                }
                '+' | '#' if !wildcards_allowed => return Err(SubjectError::WildcardInTopic),
                '+' => subject.push('*'),
                '#' => subject.push('>'),
                '.' => subject.push_str("//"),
                c => {
                    // Writing a char to a String cannot fail.
                    let _ = subject.write_char(c);
                }
            }
        }
    }
    Ok(subject)
}

/// The MQTT topic of the NATS subject `subject`, or `None` when it is not under `prefix` or
/// maps to no topic (the prefix alone). Any subject under the prefix maps to some topic, so a
/// native NATS publisher needs to know nothing of the mapping for plain subjects (`a.b` is
/// `a/b`).
pub fn subject_to_topic(prefix: &str, subject: &str) -> Option<String> {
    let rest = if prefix.is_empty() {
        subject
    } else {
        subject.strip_prefix(prefix)?.strip_prefix('.')?
    };
    if rest.is_empty() {
        return None;
    }
    let mut topic = String::with_capacity(rest.len());
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' => match chars.peek() {
                // An empty level followed by a separator: only the separator remains.
                Some('.') => {
                    topic.push('/');
                    chars.next();
                }
                Some('/') => {
                    topic.push('.');
                    chars.next();
                }
                // An empty level at the end, or a stray `/` inside a token.
                _ => {}
            },
            '.' => topic.push('/'),
            c => topic.push(c),
        }
    }
    if topic.is_empty() { None } else { Some(topic) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (MQTT, NATS) pairs without a prefix: each maps to the other both ways.
    const TOPICS: &[(&str, &str)] = &[
        ("a", "a"),
        ("a/b", "a.b"),
        ("a/b/c", "a.b.c"),
        ("/", "/./"),
        ("//", "/././"),
        ("///", "/./././"),
        ("/a", "/.a"),
        ("a/", "a./"),
        ("/a/", "/.a./"),
        ("a//b", "a./.b"),
        ("a//", "a././"),
        ("//a", "/./.a"),
        ("a.b", "a//b"),
        (".", "//"),
        ("a/./b", "a.//.b"),
        ("./a", "//.a"),
        ("a/.", "a.//"),
        ("..", "////"),
        ("/.", "/.//"),
        ("score/match-12/goals", "score.match-12.goals"),
        ("$SYS/broker", "$SYS.broker"),
        ("ünï/cødé", "ünï.cødé"),
    ];

    #[test]
    fn topics_map_both_ways() {
        for &(topic, subject) in TOPICS {
            assert_eq!(
                topic_to_subject("", topic).as_deref(),
                Ok(subject),
                "{topic}"
            );
            assert_eq!(
                subject_to_topic("", subject).as_deref(),
                Some(topic),
                "{subject}"
            );
        }
    }

    #[test]
    fn the_prefix_goes_first_and_is_required_back() {
        assert_eq!(topic_to_subject("mqtt", "a/b").as_deref(), Ok("mqtt.a.b"));
        assert_eq!(topic_to_subject("mqtt", "/").as_deref(), Ok("mqtt././"));
        assert_eq!(topic_to_subject("x.y", "a").as_deref(), Ok("x.y.a"));
        assert_eq!(subject_to_topic("mqtt", "mqtt.a.b").as_deref(), Some("a/b"));
        assert_eq!(subject_to_topic("mqtt", "mqtt./.").as_deref(), Some("/"));
        assert_eq!(subject_to_topic("x.y", "x.y.a").as_deref(), Some("a"));
        assert_eq!(subject_to_topic("mqtt", "other.a"), None);
        assert_eq!(subject_to_topic("mqtt", "mqttx.a"), None);
        assert_eq!(subject_to_topic("mqtt", "mqtt"), None);
        assert_eq!(subject_to_topic("mqtt", "mqtt."), None);
        assert_eq!(subject_to_topic("", ""), None);
    }

    #[test]
    fn filters_map_wildcards() {
        let cases = [
            ("#", "mqtt.>"),
            ("+", "mqtt.*"),
            ("a/+", "mqtt.a.*"),
            ("+/+", "mqtt.*.*"),
            ("a/+/c", "mqtt.a.*.c"),
            ("a/#", "mqtt.a.>"),
            ("/#", "mqtt./.>"),
            ("+/#", "mqtt.*.>"),
            ("/+", "mqtt./.*"),
            ("a.b/#", "mqtt.a//b.>"),
            ("$SYS/#", "mqtt.$SYS.>"),
        ];
        for (filter, subject) in cases {
            assert_eq!(filter_to_subject("mqtt", filter).as_deref(), Ok(subject));
        }
    }

    #[test]
    fn a_trailing_multi_level_wildcard_also_subscribes_the_parent() {
        assert_eq!(
            filter_subjects("mqtt", "a/b/#"),
            Ok(vec!["mqtt.a.b.>".to_owned(), "mqtt.a.b".to_owned()])
        );
        assert_eq!(
            filter_subjects("mqtt", "/#"),
            Ok(vec!["mqtt./.>".to_owned()])
        );
        assert_eq!(
            filter_subjects("mqtt", "//#"),
            Ok(vec!["mqtt././.>".to_owned(), "mqtt././".to_owned()])
        );
        assert_eq!(filter_subjects("mqtt", "#"), Ok(vec!["mqtt.>".to_owned()]));
        assert_eq!(
            filter_subjects("mqtt", "a/+"),
            Ok(vec!["mqtt.a.*".to_owned()])
        );
    }

    #[test]
    fn refusals() {
        for bad in ["a b", "a\tb", "a\nb", "a\rb", "a\x0cb", "a\x7fb", " "] {
            assert_eq!(
                topic_to_subject("mqtt", bad),
                Err(SubjectError::UnsupportedCharacter),
                "{bad:?}"
            );
            assert_eq!(
                filter_to_subject("mqtt", bad),
                Err(SubjectError::UnsupportedCharacter),
                "{bad:?}"
            );
        }
        assert_eq!(
            topic_to_subject("mqtt", "a/+"),
            Err(SubjectError::WildcardInTopic)
        );
        assert_eq!(
            topic_to_subject("mqtt", "a/#"),
            Err(SubjectError::WildcardInTopic)
        );
        assert_eq!(topic_to_subject("mqtt", ""), Err(SubjectError::Empty));
        assert_eq!(filter_to_subject("mqtt", ""), Err(SubjectError::Empty));
    }

    #[test]
    fn native_subjects_read_as_topics() {
        // What a native NATS publisher may send that no topic maps to: a stray `/` inside a
        // token is dropped, as nats-server's MQTT support does.
        assert_eq!(subject_to_topic("", "a/b.c").as_deref(), Some("ab/c"));
        assert_eq!(subject_to_topic("", "a./").as_deref(), Some("a/"));
        assert_eq!(subject_to_topic("", "/").as_deref(), None);
        assert_eq!(subject_to_topic("", "/x").as_deref(), Some("x"));
    }

    proptest::proptest! {
        #[test]
        fn every_mappable_topic_comes_back(topic in "[a-z./$é-]{1,12}") {
            let subject = topic_to_subject("mqtt", &topic).expect("no refused characters");
            proptest::prop_assert_eq!(subject_to_topic("mqtt", &subject), Some(topic));
        }
    }
}
