//! Tests of the ACL file and the filter containment and intersection it rests on.

use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;

fn acl(text: &str) -> AclFile {
    AclFile::parse(text, Path::new("test.acl")).expect("the test file parses")
}

fn anonymous(client_id: &str) -> Identity<'_> {
    Identity {
        user: None,
        client_id,
    }
}

fn user<'a>(name: &'a str, client_id: &'a str) -> Identity<'a> {
    Identity {
        user: Some(name),
        client_id,
    }
}

fn line_error(text: &str) -> (usize, LineProblem) {
    match AclFile::parse(text, Path::new("test.acl")) {
        Err(AclError::Line { line, problem, .. }) => (line, problem),
        other => panic!("{text:?}: expected a line error, got {other:?}"),
    }
}

fn contains_filter(outer: &str, inner: &str) -> bool {
    contains(levels(outer), levels(inner))
}

fn intersects_filters(a: &str, b: &str) -> bool {
    intersects(levels(a), levels(b))
}

#[test]
fn parse_errors_name_the_line() {
    let cases: &[(&str, usize, LineProblem)] = &[
        ("bogus a", 1, LineProblem::UnknownKeyword("bogus".into())),
        (
            "# c\n\nTopic a",
            3,
            LineProblem::UnknownKeyword("Topic".into()),
        ),
        ("topic a\nuser", 2, LineProblem::MissingUserName),
        ("user   ", 1, LineProblem::MissingUserName),
        ("topic", 1, LineProblem::MissingTopic),
        ("pattern   ", 1, LineProblem::MissingTopic),
        (
            "topic reed a/b",
            1,
            LineProblem::UnknownAccess("reed".into()),
        ),
        // A topic with a space needs its access word.
        ("topic a b", 1, LineProblem::UnknownAccess("a".into())),
        ("topic read a/#/b", 1, LineProblem::InvalidTopicFilter),
        ("topic read a+", 1, LineProblem::InvalidTopicFilter),
        ("topic read sport#", 1, LineProblem::InvalidTopicFilter),
        ("\n\ntopic read a\0b", 3, LineProblem::InvalidTopicFilter),
        ("pattern read a/x%u", 1, LineProblem::PartialSubstitution),
        ("pattern read %c%u", 1, LineProblem::PartialSubstitution),
        (
            "user a\r\ntopic a\r\nwhat",
            3,
            LineProblem::UnknownKeyword("what".into()),
        ),
    ];
    for (text, line, problem) in cases {
        assert_eq!(line_error(text), (*line, problem.clone()), "{text:?}");
    }
}

#[test]
fn errors_name_the_file_and_line() {
    let error = AclFile::parse("topic a\nuser", Path::new("/etc/fanfare/acl")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "acl_file `/etc/fanfare/acl` line 2: `user` without a name"
    );
}

#[test]
fn lines_and_rules_are_bounded() {
    let long = format!("topic read {}", "a".repeat(ACL_LINE_BYTES_MAX));
    assert_eq!(line_error(&long), (1, LineProblem::TooLong));
    let most = "topic a\n".repeat(ACL_RULES_MAX);
    assert!(AclFile::parse(&most, Path::new("test.acl")).is_ok());
    let too_many = format!("{most}# patterns count too\npattern b\n");
    assert_eq!(
        line_error(&too_many),
        (ACL_RULES_MAX + 2, LineProblem::TooManyRules)
    );
}

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("fanfare-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.acl");
    std::fs::write(&good, "topic read a/#\n").expect("write");
    let file = AclFile::load(&good).expect("loads");
    assert!(file.may_subscribe(&anonymous("c"), "a/+"));

    let missing = dir.join("missing.acl");
    let error = AclFile::load(&missing).unwrap_err();
    assert!(matches!(error, AclError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.acl"), "{error}");

    let latin1 = dir.join("latin1.acl");
    std::fs::write(&latin1, b"topic a\ntopic b\ntopic caf\xe9\n").expect("write");
    let error = AclFile::load(&latin1).unwrap_err();
    assert!(
        matches!(
            &error,
            AclError::Line {
                line: 3,
                problem: LineProblem::NotUtf8,
                ..
            }
        ),
        "{error:?}"
    );

    let huge = dir.join("huge.acl");
    let bytes = usize::try_from(ACL_FILE_BYTES_MAX).expect("fits") + 1;
    std::fs::write(&huge, vec![b'\n'; bytes]).expect("write");
    let error = AclFile::load(&huge).unwrap_err();
    assert!(matches!(error, AclError::TooLarge { .. }), "{error:?}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn access_words_and_their_default() {
    let file = acl(
        "topic read r\ntopic write w\ntopic readwrite rw\ntopic d\ntopic deny x\n\
         topic read with space",
    );
    let c = anonymous("c");
    assert!(file.may_subscribe(&c, "r") && !file.may_publish(&c, "r"));
    assert!(!file.may_subscribe(&c, "w") && file.may_publish(&c, "w"));
    assert!(file.may_subscribe(&c, "rw") && file.may_publish(&c, "rw"));
    assert!(file.may_subscribe(&c, "d") && file.may_publish(&c, "d"));
    assert!(!file.may_subscribe(&c, "x") && !file.may_publish(&c, "x"));
    assert!(file.may_subscribe(&c, "with space"));
    assert!(!file.may_subscribe(&c, "elsewhere") && !file.may_publish(&c, "elsewhere"));
}

#[test]
fn comments_blank_lines_indentation_and_tabs() {
    let file = acl("# heading\n\n   # indented comment\r\nuser alice\n\ttopic\tread\ta/#\n  \n");
    assert!(file.may_subscribe(&user("alice", "c"), "a/b"));
    let file = acl("\u{feff}topic read a\r\n");
    assert!(file.may_subscribe(&anonymous("c"), "a"));
}

#[test]
fn an_empty_file_allows_nothing() {
    let file = acl("");
    assert!(!file.may_subscribe(&anonymous("c"), "a"));
    assert!(!file.may_publish(&user("u", "c"), "a"));
}

#[test]
fn anonymous_rules_are_for_clients_without_a_username() {
    let file = acl("topic read public/#\nuser alice\ntopic readwrite alice/#\nuser bob\n");
    let anon = anonymous("c");
    let alice = user("alice", "c");
    let bob = user("bob", "c");
    let carol = user("carol", "c");
    assert!(file.may_subscribe(&anon, "public/#"));
    assert!(!file.may_subscribe(&anon, "alice/#"));
    assert!(file.may_subscribe(&alice, "alice/#") && file.may_publish(&alice, "alice/x"));
    // A user gets its own section only, not the anonymous one, even an empty section.
    assert!(!file.may_subscribe(&alice, "public/#"));
    assert!(!file.may_subscribe(&bob, "public/#") && !file.may_subscribe(&bob, "alice/#"));
    // A user the file does not name gets the patterns only (none here).
    assert!(!file.may_subscribe(&carol, "public/#"));
    // The username is not the client id.
    assert!(!file.may_subscribe(&user("x", "alice"), "alice/#"));
}

#[test]
fn a_user_named_twice_gathers_both_sections() {
    let file = acl("user alice\ntopic read a\nuser bob\ntopic read b\nuser alice\ntopic read c");
    let alice = user("alice", "c");
    assert!(file.may_subscribe(&alice, "a") && file.may_subscribe(&alice, "c"));
    assert!(!file.may_subscribe(&alice, "b"));
}

#[test]
fn usernames_may_hold_spaces() {
    let file = acl("user Jane Doe\ntopic read jane/#");
    assert!(file.may_subscribe(&user("Jane Doe", "c"), "jane/x"));
    assert!(!file.may_subscribe(&user("Jane", "c"), "jane/x"));
}

#[test]
fn patterns_substitute_the_username() {
    let file = acl("pattern readwrite users/%u/#\nuser alice\ntopic read other");
    let alice = user("alice", "c1");
    let bob = user("bob", "c2");
    assert!(file.may_publish(&alice, "users/alice/status"));
    assert!(file.may_subscribe(&alice, "users/alice/#"));
    assert!(file.may_subscribe(&alice, "users/alice"));
    assert!(!file.may_publish(&alice, "users/bob/status"));
    assert!(!file.may_subscribe(&alice, "users/bob/#"));
    assert!(!file.may_subscribe(&alice, "users/+/status"));
    assert!(!file.may_subscribe(&alice, "users/#"));
    // Patterns apply to users in the file and out of it alike.
    assert!(file.may_publish(&bob, "users/bob/status"));
    assert!(!file.may_publish(&bob, "users/alice/status"));
    // `%u` in a `topic` rule is plain text.
    let file = acl("topic read users/%u");
    assert!(!file.may_subscribe(&alice, "users/alice"));
    assert!(file.may_subscribe(&anonymous("c"), "users/%u"));
}

#[test]
fn patterns_substitute_the_client_id() {
    let file = acl("pattern write devices/%c/state\npattern read devices/%c/+/config");
    let d1 = user("fleet", "d1");
    assert!(file.may_publish(&d1, "devices/d1/state"));
    assert!(!file.may_publish(&d1, "devices/d2/state"));
    assert!(file.may_subscribe(&d1, "devices/d1/+/config"));
    assert!(file.may_subscribe(&d1, "devices/d1/x/config"));
    assert!(!file.may_subscribe(&d1, "devices/d2/x/config"));
    assert!(!file.may_subscribe(&d1, "devices/+/x/config"));
    // The client id is not the username.
    assert!(!file.may_publish(&user("d1", "other"), "devices/d1/state"));
    // Client id patterns apply to anonymous clients too.
    assert!(file.may_publish(&anonymous("d1"), "devices/d1/state"));
}

#[test]
fn username_patterns_skip_anonymous_clients() {
    let file = acl("pattern readwrite %u/#\npattern deny secret/%u");
    let anon = anonymous("c");
    assert!(!file.may_subscribe(&anon, "c/#"));
    assert!(!file.may_publish(&anon, "x"));
}

#[test]
fn names_that_cannot_stand_as_one_level_grant_nothing() {
    let file = acl("pattern readwrite %u/#\npattern readwrite clients/%c\npattern read %c/#");
    // A username of `#` must not turn `%u/#` into `#/#` (everything), nor `+` into `+/#`.
    for name in ["#", "+", "a/b", "a/+", ""] {
        let who = user(name, "ok");
        assert!(!file.may_subscribe(&who, "#"), "{name:?}");
        assert!(!file.may_subscribe(&who, "a/#"), "{name:?}");
        assert!(!file.may_publish(&who, "a/b/c"), "{name:?}");
    }
    // A client id of `a/b` must not reach into `a`'s tree, nor `$SYS` into the broker's.
    for id in ["#", "+", "a/b", "", "$SYS"] {
        let who = user("u", id);
        assert!(!file.may_publish(&who, "clients/a/b"), "{id:?}");
        assert!(!file.may_subscribe(&who, "a/b"), "{id:?}");
        assert!(!file.may_subscribe(&who, "$SYS/#"), "{id:?}");
        assert!(!file.may_subscribe(&who, "#"), "{id:?}");
    }
    // The same file with plain names.
    assert!(file.may_subscribe(&user("a", "ok"), "a/#"));
    assert!(file.may_publish(&user("u", "x"), "clients/x"));
    assert!(file.may_subscribe(&user("u", "SYS"), "SYS/x"));
}

#[test]
fn deny_patterns_widen_for_names_that_cannot_stand_as_one_level() {
    let file = acl("topic readwrite #\npattern deny chat/banned/%c/x\n\
         user u\ntopic readwrite #\ntopic read $SYS/#\npattern deny %u/#");
    // Plain: the deny reaches exactly its substitution.
    let plain = anonymous("bob");
    assert!(!file.may_publish(&plain, "chat/banned/bob/x"));
    assert!(file.may_publish(&plain, "chat/banned/eve/x"));
    assert!(file.may_publish(&plain, "chat/x"));
    // `a/b` would have denied `chat/banned/a/b/x`; the deny covers `chat/banned/#` instead.
    let odd = anonymous("a/b");
    assert!(!file.may_publish(&odd, "chat/banned/a/b/x"));
    assert!(!file.may_publish(&odd, "chat/banned/eve/x"));
    assert!(!file.may_subscribe(&odd, "chat/#"));
    assert!(file.may_publish(&odd, "chat/x"));
    assert!(!file.may_subscribe(&anonymous("#"), "chat/banned/bob/x"));
    // At the first level the widened deny covers every topic, `$` ones included.
    let odd_user = user("u", "x");
    assert!(file.may_subscribe(&odd_user, "$SYS/x"));
    let odd_user = Identity {
        user: Some("$SYS/+"),
        client_id: "x",
    };
    assert!(!file.may_subscribe(&odd_user, "$SYS/x"));
    assert!(!file.may_publish(&odd_user, "a"));
    // A deny substitutes names that grants refuse: `$SYS` and empty stand as one level.
    let file = acl("topic read #\ntopic read $SYS/#\npattern deny %c/#");
    assert!(!file.may_subscribe(&anonymous("$SYS"), "$SYS/x"));
    assert!(file.may_subscribe(&anonymous("$SYS"), "a/x"));
    assert!(!file.may_subscribe(&anonymous(""), "/x"));
    assert!(file.may_subscribe(&anonymous(""), "a/x"));
}

#[test]
fn deny_wins_whatever_the_order_and_section() {
    let after = acl("topic readwrite a/#\ntopic deny a/secret/#");
    let before = acl("topic deny a/secret/#\ntopic readwrite a/#");
    let c = anonymous("c");
    for file in [&after, &before] {
        assert!(!file.may_publish(&c, "a/secret"));
        assert!(!file.may_publish(&c, "a/secret/x"));
        assert!(file.may_publish(&c, "a/public"));
        assert!(!file.may_subscribe(&c, "a/secret/x"));
        assert!(file.may_subscribe(&c, "a/public/#"));
    }
    // A user's deny beats a pattern's grant, and a pattern's deny a user's grant.
    let file = acl(
        "user u\ntopic deny u/private\npattern readwrite %u/#\npattern deny %c/#\n\
         user v\ntopic readwrite #",
    );
    assert!(!file.may_publish(&user("u", "c"), "u/private"));
    assert!(file.may_publish(&user("u", "c"), "u/public"));
    assert!(!file.may_publish(&user("v", "d1"), "d1/x"));
    assert!(file.may_publish(&user("v", "d1"), "d2/x"));
    // Another user's deny does not reach this one.
    assert!(file.may_publish(&user("v", "c"), "u/private"));
}

#[test]
fn subscribe_needs_one_readable_rule_around_the_whole_filter() {
    let file = acl("topic read scores/+\ntopic read live/#\ntopic read a\ntopic read a/+/#");
    let c = anonymous("c");
    assert!(file.may_subscribe(&c, "scores/+"));
    assert!(file.may_subscribe(&c, "scores/x"));
    // Mosquitto lets this one through and filters deliveries; we refuse it.
    assert!(!file.may_subscribe(&c, "scores/#"));
    assert!(!file.may_subscribe(&c, "scores/x/y"));
    assert!(file.may_subscribe(&c, "live/#"));
    assert!(file.may_subscribe(&c, "live"));
    assert!(file.may_subscribe(&c, "live/+/+"));
    // Covered by `a` and `a/+/#` together, by neither alone.
    assert!(!file.may_subscribe(&c, "a/#"));
    assert!(file.may_subscribe(&c, "a") && file.may_subscribe(&c, "a/+/#"));
}

#[test]
fn subscribe_is_refused_when_a_deny_reaches_into_the_filter() {
    let file = acl("topic read scores/#\ntopic deny scores/secret/#");
    let c = anonymous("c");
    assert!(!file.may_subscribe(&c, "scores/#"));
    // `scores/+` matches `scores/secret`, which the deny's `#` takes too.
    assert!(!file.may_subscribe(&c, "scores/+"));
    assert!(!file.may_subscribe(&c, "scores/+/x"));
    assert!(!file.may_subscribe(&c, "scores/secret"));
    assert!(file.may_subscribe(&c, "scores/public/#"));
    assert!(file.may_subscribe(&c, "scores"));
    assert!(file.may_subscribe(&c, "scores/public/+"));
}

#[test]
fn dollar_topics() {
    let file = acl("topic readwrite #\ntopic read $SYS/broker/#\ntopic write $cmd/#");
    let c = anonymous("c");
    // [MQTT-4.7.2-1]: `#` does not reach topics starting with `$`.
    assert!(!file.may_subscribe(&c, "$SYS/#"));
    assert!(!file.may_subscribe(&c, "$other/x"));
    assert!(file.may_subscribe(&c, "$SYS/broker/+"));
    assert!(file.may_subscribe(&c, "#") && file.may_subscribe(&c, "+/x"));
    // Publishing to `$` topics is refused whatever the rules say.
    assert!(!file.may_publish(&c, "$cmd/x"));
    assert!(!file.may_publish(&c, "$SYS/broker/x"));
    assert!(file.may_publish(&c, "a/$x"));
    // A deny of `#` leaves `$` topics alone, as it matches none.
    let file = acl("topic read $SYS/#\ntopic deny #");
    assert!(file.may_subscribe(&c, "$SYS/x"));
    assert!(!file.may_subscribe(&c, "x"));
    // A shared subscription passed whole reads as a `$share` filter: refused.
    assert!(!acl("topic read #").may_subscribe(&c, "$share/g/a"));
}

#[test]
fn invalid_filters_and_topics_are_refused() {
    let file = acl("topic readwrite #");
    let c = anonymous("c");
    for filter in ["", "a/#/b", "a+", "a\0"] {
        assert!(!file.may_subscribe(&c, filter), "{filter:?}");
    }
    for topic in ["", "a/+", "a/#", "a\0"] {
        assert!(!file.may_publish(&c, topic), "{topic:?}");
    }
}

#[test]
fn containment_table() {
    let cases = [
        ("#", "a", true),
        ("#", "a/b/c", true),
        ("#", "#", true),
        ("#", "+", true),
        ("#", "/", true),
        ("#", "$SYS/x", false),
        ("#", "$SYS/#", false),
        ("+/#", "#", true),
        ("+/#", "a", true),
        ("+/#", "/a", true),
        ("+", "#", false),
        ("+/+", "#", false),
        ("+/+/#", "#", false),
        ("a/#", "#", false),
        ("a/#", "+/#", false),
        ("scores/#", "scores/+", true),
        ("scores/#", "scores", true),
        ("scores/#", "scores/#", true),
        ("scores/+/#", "scores/a/#", true),
        ("scores/+/#", "scores/#", false),
        ("scores/+", "scores/#", false),
        ("scores/+", "scores", false),
        ("scores/+", "scores/+", true),
        ("scores/a", "scores/+", false),
        ("scores/a", "scores/a", true),
        ("scores/a", "scores/b", false),
        ("scores/a", "scores/a/b", false),
        ("scores/a/b", "scores/a", false),
        ("scores", "scores/#", false),
        ("a/+/c", "a/b/c", true),
        ("a/+/c", "a/+/d", false),
        ("+/b", "a/b", true),
        ("+/b", "$a/b", false),
        ("+", "$SYS", false),
        ("$SYS/#", "$SYS/a", true),
        ("$SYS/#", "$SYS", true),
        ("$SYS/+", "$SYS/#", false),
        ("$SYS/#", "+/#", false),
        ("a//b", "a/+/b", false),
        ("a/+/b", "a//b", true),
        ("/#", "/a", true),
        ("/#", "#", false),
        ("Scores/#", "scores/a", false),
        // The empty topic is no topic [MQTT-4.7.3-1], so `/#` matches what `/+/#` matches.
        ("/+/#", "/#", true),
        ("+/+/#", "/#", true),
        ("/#", "/+/#", true),
        ("//#", "/+/#", false),
        ("/+/#", "//#", true),
        ("+/+", "/#", false),
    ];
    for (outer, inner, expected) in cases {
        assert_eq!(contains_filter(outer, inner), expected, "{outer} ⊇ {inner}");
        assert_eq!(
            filter_covered(inner, &[outer.to_owned()]),
            expected,
            "{outer} ⊇ {inner}"
        );
    }
}

#[test]
fn intersection_table() {
    let cases = [
        ("#", "a", true),
        ("#", "#", true),
        ("#", "$SYS/a", false),
        ("$SYS/#", "#", false),
        ("$SYS/#", "+/#", false),
        ("+/x", "$a/x", false),
        ("$SYS/#", "$SYS/+", true),
        ("$SYS/#", "$SYSTEM/+", false),
        ("a/#", "a", true),
        ("a/+", "a", false),
        ("a/+", "a/b", true),
        ("a/b", "a/c", false),
        ("a/+/c", "a/b/+", true),
        ("a/+/c", "a/b/d", false),
        ("+", "+", true),
        ("+", "#", true),
        ("+", "a/b", false),
        ("+/+", "a/#", true),
        ("a/b/#", "a/+", true),
        ("a/b/#", "a", false),
        ("a/b/c", "a/#", true),
        ("/", "+/+", true),
        ("/", "+", false),
        ("scores/secret/#", "scores/+", true),
        ("scores/secret/#", "scores/+/x", true),
        ("scores/secret/#", "scores/public/#", false),
        ("scores/secret/#", "scores", false),
        // `+` and `/#` share only the empty topic, which is no topic.
        ("+", "/#", false),
        ("#", "/#", true),
        ("+/#", "/#", true),
        ("+/+", "/#", true),
        ("+", "//#", false),
    ];
    for (a, b, expected) in cases {
        assert_eq!(intersects_filters(a, b), expected, "{a} ∩ {b}");
        assert_eq!(intersects_filters(b, a), expected, "{b} ∩ {a}");
    }
}

#[test]
fn token_allow_lists() {
    let allowed = vec![
        "scores/#".to_owned(),
        "chat/+/in".to_owned(),
        "a/#/b".to_owned(),
    ];
    assert!(filter_covered("scores/+", &allowed));
    assert!(filter_covered("chat/x/in", &allowed));
    assert!(filter_covered("chat/+/in", &allowed));
    assert!(!filter_covered("chat/#", &allowed));
    assert!(!filter_covered("#", &allowed));
    assert!(
        !filter_covered("a/x/b", &allowed),
        "an invalid entry allows nothing"
    );
    assert!(!filter_covered("scores/#/x", &allowed));
    assert!(!filter_covered("x", &[]));
    assert!(topic_allowed("scores/a/b", &allowed));
    assert!(topic_allowed("chat/x/in", &allowed));
    assert!(!topic_allowed("chat/x/out", &allowed));
    assert!(!topic_allowed("scores/+", &allowed));
    assert!(!topic_allowed("a/x/b", &allowed));
    assert!(!topic_allowed("$SYS/x", &["$SYS/#".to_owned()]));
    assert!(filter_covered("$SYS/x", &["$SYS/#".to_owned()]));
    assert!(!filter_covered("$SYS/x", &["#".to_owned()]));
}

// Properties over a small alphabet: filters of up to four levels drawn from `a`, `b`, the
// empty level and `$s`, checked against every topic of up to five levels over those and one
// more value, `z`. A counterexample to containment or intersection, if any, can be rewritten
// into that universe (a level no filter names becomes `z`; a topic deeper than both filters
// cut to one level more than the longer), so the brute force is exact there.

const LITERALS: [&str; 4] = ["a", "b", "", "$s"];

static UNIVERSE: LazyLock<Vec<String>> = LazyLock::new(|| {
    let values = ["a", "b", "", "$s", "z"];
    let mut topics: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
    let mut last = topics.clone();
    for _ in 1..5 {
        last = last
            .iter()
            .flat_map(|t| values.iter().map(move |v| format!("{t}/{v}")))
            .collect();
        topics.extend(last.iter().cloned());
    }
    topics.retain(|t| is_valid_topic_name(t));
    topics
});

/// A valid filter of up to four levels over `extra` and the literals, maybe ending in `#`.
fn filter_over(extra: &'static [&'static str]) -> impl Strategy<Value = String> {
    let choices: Vec<&str> = LITERALS.iter().chain(extra).copied().collect();
    (
        prop::collection::vec(prop::sample::select(choices), 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("a valid filter", |f| is_valid_topic_filter(f))
}

fn filter() -> impl Strategy<Value = String> {
    filter_over(&["+"])
}

fn brute_contains(outer: &str, inner: &str) -> bool {
    UNIVERSE
        .iter()
        .all(|t| !filter_matches(inner, t) || filter_matches(outer, t))
}

fn brute_intersects(a: &str, b: &str) -> bool {
    UNIVERSE
        .iter()
        .any(|t| filter_matches(a, t) && filter_matches(b, t))
}

/// A line of a generated ACL file, kept as data for the oracle below.
#[derive(Debug, Clone)]
enum Line {
    User(&'static str),
    Topic(Option<Access>, String),
    Pattern(Option<Access>, String),
}

fn access() -> impl Strategy<Value = Option<Access>> {
    prop::option::of(prop::sample::select(vec![
        Access::Read,
        Access::Write,
        Access::ReadWrite,
        Access::Deny,
    ]))
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "#"]).prop_map(Line::User),
        (access(), filter_over(&["+", "%u"])).prop_map(|(a, f)| Line::Topic(a, f)),
        (access(), filter_over(&["+", "%u", "%c"])).prop_map(|(a, f)| Line::Pattern(a, f)),
    ]
}

fn render(lines: &[Line]) -> String {
    let word = |access: &Option<Access>| match access {
        None => "",
        Some(Access::Read) => "read ",
        Some(Access::Write) => "write ",
        Some(Access::ReadWrite) => "readwrite ",
        Some(Access::Deny) => "deny ",
    };
    let mut text = String::new();
    for line in lines {
        match line {
            Line::User(name) => text.push_str(&format!("user {name}\n")),
            Line::Topic(a, f) => text.push_str(&format!("topic {}{f}\n", word(a))),
            Line::Pattern(a, f) => text.push_str(&format!("pattern {}{f}\n", word(a))),
        }
    }
    text
}

const NAMES: [&str; 8] = ["a", "b", "z", "#", "+", "a/b", "", "$s"];

fn identity() -> impl Strategy<Value = (Option<&'static str>, &'static str)> {
    (
        prop::option::of(prop::sample::select(NAMES.to_vec())),
        prop::sample::select(NAMES.to_vec()),
    )
}

/// The rules as the module documentation states them, applied topic by topic with the
/// reference matcher: the client's section and the patterns, placeholders replaced as text.
/// A grant applies only with names that are non-empty, hold no `+`, `#` or `/` and do not
/// start with `$`; a deny applies with any name, substituted as it is (the implementation's
/// widened deny covers every such substitution, so it may only refuse more).
fn oracle(lines: &[Line], who: &Identity<'_>, topic: &str, wanted: Access) -> bool {
    let mut section = None;
    let (mut granted, mut denied) = (false, false);
    let usable = |v: &str| !v.is_empty() && !v.starts_with('$') && !v.contains(['+', '#', '/']);
    for line in lines {
        let (access, filter) = match line {
            Line::User(name) => {
                section = Some(*name);
                continue;
            }
            Line::Topic(access, filter) if section == who.user => (access, filter.clone()),
            Line::Topic(..) => continue,
            Line::Pattern(access, filter) => {
                let levels: Vec<&str> = filter.split('/').collect();
                if levels.contains(&"%u") && who.user.is_none() {
                    continue;
                }
                let user = who.user.unwrap_or_default();
                let is_deny = *access == Some(Access::Deny);
                let uses = |p| levels.contains(&p);
                if !is_deny
                    && ((uses("%u") && !usable(user)) || (uses("%c") && !usable(who.client_id)))
                {
                    continue;
                }
                let substituted: Vec<&str> = levels
                    .iter()
                    .map(|l| match *l {
                        "%u" => user,
                        "%c" => who.client_id,
                        other => other,
                    })
                    .collect();
                (access, substituted.join("/"))
            }
        };
        let access = access.unwrap_or(Access::ReadWrite);
        if !filter_matches(&filter, topic) {
            continue;
        }
        match (access, wanted) {
            (Access::Deny, _) => denied = true,
            (Access::ReadWrite, _) | (Access::Read, Access::Read) => granted = true,
            (Access::Write, Access::Write) => granted = true,
            _ => {}
        }
    }
    granted && !denied
}

proptest! {
    #[test]
    fn containment_agrees_with_brute_force(outer in filter(), inner in filter()) {
        prop_assert_eq!(contains_filter(&outer, &inner), brute_contains(&outer, &inner));
    }

    #[test]
    fn intersection_agrees_with_brute_force(a in filter(), b in filter()) {
        prop_assert_eq!(intersects_filters(&a, &b), brute_intersects(&a, &b));
    }

    #[test]
    fn filter_covered_agrees_with_brute_force(
        filter in filter(),
        allowed in prop::collection::vec(filter(), 0..4),
    ) {
        let brute = allowed.iter().any(|a| brute_contains(a, &filter));
        prop_assert_eq!(filter_covered(&filter, &allowed), brute);
    }

    #[test]
    fn topic_allowed_agrees_with_the_matcher(
        allowed in prop::collection::vec(filter(), 0..4),
        pick in any::<prop::sample::Index>(),
    ) {
        let topic = pick.get(&UNIVERSE);
        let expected = !topic.starts_with('$') && allowed.iter().any(|a| filter_matches(a, topic));
        prop_assert_eq!(topic_allowed(topic, &allowed), expected);
    }

    /// What a subscription is granted, every topic it matches is readable; a subscription
    /// to one topic is granted exactly when that topic is readable (while names stand as one
    /// level, so that no deny is widened).
    #[test]
    fn a_granted_subscription_reads_only_readable_topics(
        lines in prop::collection::vec(line(), 0..10),
        (user, client_id) in identity(),
        filter in filter(),
    ) {
        let file = acl(&render(&lines));
        let who = Identity { user, client_id };
        let plain = |v: &str| !v.contains(['+', '#', '/']);
        let exact = user.is_none_or(plain) && plain(client_id);
        if file.may_subscribe(&who, &filter) {
            for topic in UNIVERSE.iter().filter(|t| filter_matches(&filter, t)) {
                prop_assert!(oracle(&lines, &who, topic, Access::Read), "{}", topic);
            }
        }
        for topic in UNIVERSE.iter().filter(|_| exact) {
            prop_assert_eq!(
                file.may_subscribe(&who, topic),
                oracle(&lines, &who, topic, Access::Read),
                "{}", topic
            );
        }
    }

    /// Publishing is allowed exactly as the oracle says while names stand as one level, and
    /// never more than it says otherwise; `$` topics never.
    #[test]
    fn publish_agrees_with_the_oracle(
        lines in prop::collection::vec(line(), 0..10),
        (user, client_id) in identity(),
    ) {
        let file = acl(&render(&lines));
        let who = Identity { user, client_id };
        let plain = |v: &str| !v.contains(['+', '#', '/']);
        let exact = user.is_none_or(plain) && plain(client_id);
        for topic in UNIVERSE.iter() {
            let allowed = file.may_publish(&who, topic);
            let expected = !topic.starts_with('$') && oracle(&lines, &who, topic, Access::Write);
            if exact {
                prop_assert_eq!(allowed, expected, "{}", topic);
            } else {
                prop_assert!(!allowed || expected, "{}", topic);
            }
        }
    }
}
