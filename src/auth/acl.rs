//! Topic rules: the ACL file (`acl_file`, Mosquitto's format) and the allow-lists a token
//! carries, answered as "may this client publish to this topic?" and "may it subscribe to this
//! filter?".
//!
//! The broker asks once per SUBSCRIBE filter and once per topic a session publishes to, never per
//! delivery. A subscription is therefore granted only when the rules allow every message it could
//! ever receive: the filter must lie inside one readable rule (containment of filters), and no
//! deny rule may reach any topic the filter matches (intersection of filters). Both are decided
//! level by level on the two filters, without enumerating topics.
//!
//! # The file
//!
//! ```text
//! # anonymous clients (no username): the rules before the first `user` line
//! topic read scores/#
//! user alice
//! topic readwrite scores/alice/#
//! topic deny scores/secret/#
//! # every client, whichever section it stands in
//! pattern readwrite clients/%c/#
//! pattern read users/%u/inbox
//! ```
//!
//! As in Mosquitto: the access word is optional (readwrite) unless the topic contains a space;
//! `topic` rules apply to the section they stand in (a user the file does not name has none),
//! `pattern` rules to every client; `deny` wins over any grant, whatever the order of the lines;
//! `%u` and `%c` are substituted in `pattern` rules only and must each be a whole level; a `%u`
//! pattern does not apply to a client without a username; a `#` line is a comment. A `user`
//! named twice gathers both sections.
//!
//! Where fanfare deliberately differs:
//! - Mosquitto also checks every delivery, so it can let a broad filter through SUBSCRIBE
//!   (`scores/#` where only `scores/+` is readable) and drop what falls outside. fanfare checks
//!   only at SUBSCRIBE, so it refuses such a filter. A filter covered only by several rules
//!   together (`a/#` with `a` and `a/+/#`) is refused too: the client subscribes to the narrower
//!   filters instead. A reload that takes a right away must therefore re-check the subscriptions
//!   already granted.
//! - A username or client id is substituted only when it can stand as one level, see
//!   [`Identity`].
//! - [`AclFile::may_publish`] refuses every topic starting with `$`: those topics are the
//!   broker's, whatever the file grants (Mosquitto's bridge example
//!   `pattern write $SYS/broker/connection/%c/state` parses but grants nothing).
//! - Comments may be indented, and tabs separate words as spaces do.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::protocol::mqtt::topic::{filter_matches, is_valid_topic_filter, is_valid_topic_name};

/// Bytes an ACL file may hold: at some 80 bytes a line, room for [`ACL_RULES_MAX`] rules. The
/// cap stops a wrong path (a log, a device) from being read whole.
pub const ACL_FILE_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Bytes of one line. A rule's topic filter is compared with topics of at most
/// `topic_bytes_max` (1 KiB by default); a longer rule could never match anything and is more
/// likely a file that is not an ACL.
pub const ACL_LINE_BYTES_MAX: usize = 4096;

/// `topic` and `pattern` lines in one file. A check walks the client's section and every
/// pattern, so this bounds the work of one SUBSCRIBE filter or first publish to a topic: at most
/// 100 000 level-by-level comparisons of a filter with a rule, a few milliseconds, after which
/// the verdict is cached for the session.
pub const ACL_RULES_MAX: usize = 100_000;

/// The rules of an ACL file, ready to answer checks.
#[derive(Debug, Default)]
pub struct AclFile {
    /// The rules before the first `user` line: for clients without a username.
    anonymous: Vec<Rule>,
    users: HashMap<Box<str>, Vec<Rule>>,
    /// `pattern` rules: for every client.
    patterns: Vec<Rule>,
}

/// Who asks: the username and client id of the CONNECT.
///
/// In `pattern` rules `%u` and `%c` become these values, but only a value that can stand as
/// exactly one level: one holding `+`, `#` or `/` would change the shape of the filter (a
/// username of `#` would turn `pattern read %u` into "read everything", one of `a/b` would
/// reach into `a`'s tree). For such a value a granting pattern does not apply; a `deny` pattern
/// is widened instead, to everything below the placeholder's parent (`deny chat/%c/x` becomes
/// `deny chat/#`, and a placeholder at the first level denies every topic), so that no name
/// escapes a deny. A granting pattern also skips an empty value (every client with an empty
/// name would share one tree) and one starting with `$` (`pattern read %c/#` must not hand a
/// client named `$SYS` the broker's own topics).
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub user: Option<&'a str>,
    pub client_id: &'a str,
}

impl AclFile {
    /// Reads and parses the file at `path`, refusing one over [`ACL_FILE_BYTES_MAX`].
    pub fn load(path: &Path) -> Result<AclFile, AclError> {
        let read_error = |error| AclError::Read {
            path: path.to_owned(),
            error,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        file.take(ACL_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > ACL_FILE_BYTES_MAX {
            return Err(AclError::TooLarge {
                path: path.to_owned(),
            });
        }
        match std::str::from_utf8(&bytes) {
            Ok(text) => AclFile::parse(text, path),
            Err(error) => {
                let before = &bytes[..error.valid_up_to()];
                Err(AclError::Line {
                    path: path.to_owned(),
                    line: before.iter().filter(|&&b| b == b'\n').count() + 1,
                    problem: LineProblem::NotUtf8,
                })
            }
        }
    }

    /// Parses the text of an ACL file; `path_for_errors` only names the file in errors.
    pub fn parse(text: &str, path_for_errors: &Path) -> Result<AclFile, AclError> {
        let mut acl = AclFile::default();
        // The user whose section the lines are in (`None`: the anonymous section), and the
        // `topic` rules gathered for it since its `user` line.
        let mut section: Option<&str> = None;
        let mut section_rules = Vec::new();
        let mut rules = 0usize;
        // Editors on some systems open a UTF-8 file with a byte order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, line) in text.lines().enumerate() {
            let failed = |problem| AclError::Line {
                path: path_for_errors.to_owned(),
                line: index + 1,
                problem,
            };
            if line.len() > ACL_LINE_BYTES_MAX {
                return Err(failed(LineProblem::TooLong));
            }
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = first_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(failed(LineProblem::MissingUserName));
                    }
                    acl.close_section(section, std::mem::take(&mut section_rules));
                    section = Some(rest);
                }
                "topic" | "pattern" => {
                    rules += 1;
                    if rules > ACL_RULES_MAX {
                        return Err(failed(LineProblem::TooManyRules));
                    }
                    let is_pattern = keyword == "pattern";
                    let rule = Rule::parse(rest, is_pattern).map_err(failed)?;
                    if is_pattern {
                        acl.patterns.push(rule);
                    } else {
                        section_rules.push(rule);
                    }
                }
                other => return Err(failed(LineProblem::UnknownKeyword(other.to_owned()))),
            }
        }
        acl.close_section(section, section_rules);
        Ok(acl)
    }

    /// Files the `topic` rules of one section; a user named again gathers both sections, and a
    /// user with no rules is still listed (and so gets no anonymous rules).
    fn close_section(&mut self, section: Option<&str>, rules: Vec<Rule>) {
        match section {
            None => self.anonymous.extend(rules),
            Some(user) => self.users.entry(user.into()).or_default().extend(rules),
        }
    }

    /// May this client publish to this topic name?
    ///
    /// Some `write` or `readwrite` rule must match the topic and no `deny` rule may. A topic
    /// starting with `$` is always refused (see the module documentation).
    pub fn may_publish(&self, who: &Identity<'_>, topic: &str) -> bool {
        if topic.starts_with('$') || !is_valid_topic_name(topic) {
            return false;
        }
        let mut granted = false;
        for rule in self.rules_for(who) {
            if rule.access == Access::Read {
                continue;
            }
            let Some(rule_levels) = rule.resolve(*who) else {
                continue;
            };
            // A topic name is a filter that matches exactly itself, so "the rule matches the
            // topic" is "the rule contains the topic".
            if contains(rule_levels, levels(topic)) {
                if rule.access == Access::Deny {
                    return false;
                }
                granted = true;
            }
        }
        granted
    }

    /// May this client subscribe to this filter? Only if every topic the filter can match is
    /// readable under the client's rules (a filter partly outside the readable space is
    /// refused), and no deny rule can match any topic the filter matches.
    ///
    /// `filter` is the filter the subscription matches topics with: for a shared subscription
    /// `$share/GROUP/F` the caller passes `F`. (Passed whole, it is read as a filter for topics
    /// starting with `$share`, which only a rule naming `$share` covers: it fails closed.)
    pub fn may_subscribe(&self, who: &Identity<'_>, filter: &str) -> bool {
        if !is_valid_topic_filter(filter) {
            return false;
        }
        let mut covered = false;
        for rule in self.rules_for(who) {
            if rule.access == Access::Write {
                continue;
            }
            let Some(rule_levels) = rule.resolve(*who) else {
                continue;
            };
            if rule.access == Access::Deny {
                if intersects(rule_levels, levels(filter)) {
                    return false;
                }
            } else if !covered {
                covered = contains(rule_levels, levels(filter));
            }
        }
        covered
    }

    /// The client's section (anonymous, or its user's: a user the file does not name has
    /// none), then every pattern.
    fn rules_for(&self, who: &Identity<'_>) -> impl Iterator<Item = &Rule> {
        let section = match who.user {
            None => self.anonymous.as_slice(),
            Some(user) => self.users.get(user).map_or(&[][..], Vec::as_slice),
        };
        section.iter().chain(&self.patterns)
    }
}

/// The subscribe check for a plain list of allowed filters (the ACL a JWT carries:
/// `{"sub": [...], "pub": [...]}`): some single entry must contain every topic `filter`
/// matches. Entries that are not valid filters allow nothing.
pub fn filter_covered(filter: &str, allowed: &[String]) -> bool {
    is_valid_topic_filter(filter)
        && allowed
            .iter()
            .any(|a| is_valid_topic_filter(a) && contains(levels(a), levels(filter)))
}

/// The publish check for a plain list of allowed filters: some entry must match `topic`. A
/// topic starting with `$` is refused, as in [`AclFile::may_publish`].
pub fn topic_allowed(topic: &str, allowed: &[String]) -> bool {
    !topic.starts_with('$')
        && is_valid_topic_name(topic)
        && allowed
            .iter()
            .any(|a| is_valid_topic_filter(a) && filter_matches(a, topic))
}

/// What a rule lets a client do with the topics it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn from_word(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    levels: Box<[RuleLevel]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RuleLevel {
    Exact(Box<str>),
    Plus,
    Hash,
    /// `%u` in a pattern.
    Username,
    /// `%c` in a pattern.
    ClientId,
}

impl Rule {
    /// Parses what follows `topic` or `pattern`: `[ACCESS] FILTER`.
    fn parse(rest: &str, is_pattern: bool) -> Result<Rule, LineProblem> {
        if rest.is_empty() {
            return Err(LineProblem::MissingTopic);
        }
        // One word is the topic; with more, the first must be the access (as in Mosquitto,
        // a topic containing a space needs its access word).
        let (access, filter) = match first_word(rest) {
            (filter, "") => (Access::ReadWrite, filter),
            (word, filter) => match Access::from_word(word) {
                Some(access) => (access, filter),
                None => return Err(LineProblem::UnknownAccess(word.to_owned())),
            },
        };
        if !is_valid_topic_filter(filter) {
            return Err(LineProblem::InvalidTopicFilter);
        }
        let levels = filter
            .split('/')
            .map(|level| match level {
                "+" => Ok(RuleLevel::Plus),
                "#" => Ok(RuleLevel::Hash),
                "%u" if is_pattern => Ok(RuleLevel::Username),
                "%c" if is_pattern => Ok(RuleLevel::ClientId),
                _ if is_pattern && (level.contains("%u") || level.contains("%c")) => {
                    Err(LineProblem::PartialSubstitution)
                }
                _ => Ok(RuleLevel::Exact(level.into())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Rule { access, levels })
    }

    /// The rule's filter for this client, or `None` when the rule does not apply to it (see
    /// [`Identity`] for which values are substituted).
    fn resolve<'a>(&'a self, who: Identity<'a>) -> Option<impl Iterator<Item = Level<'a>>> {
        let is_deny = self.access == Access::Deny;
        // Mosquitto: a `%u` pattern does not apply to a client without a username.
        let user = match who.user {
            Some(user) => user,
            None if self.levels.contains(&RuleLevel::Username) => return None,
            None => "",
        };
        let mut widen_at = None;
        for (index, level) in self.levels.iter().enumerate() {
            let value = match level {
                RuleLevel::Username => user,
                RuleLevel::ClientId => who.client_id,
                _ => continue,
            };
            let one_level = !value.contains(['+', '#', '/']);
            if is_deny {
                if !one_level {
                    widen_at = Some(index);
                    break;
                }
            } else if !one_level || value.is_empty() || value.starts_with('$') {
                return None;
            }
        }
        let end = widen_at.map_or(self.levels.len(), |index| index + 1);
        Some(
            self.levels[..end]
                .iter()
                .enumerate()
                .map(move |(index, level)| match level {
                    _ if widen_at == Some(index) && index == 0 => Level::Everything,
                    _ if widen_at == Some(index) => Level::Hash,
                    RuleLevel::Exact(exact) => Level::Exact(exact),
                    RuleLevel::Plus => Level::Plus,
                    RuleLevel::Hash => Level::Hash,
                    RuleLevel::Username => Level::Exact(user),
                    RuleLevel::ClientId => Level::Exact(who.client_id),
                }),
        )
    }
}

/// One level of a topic filter (a topic name is a filter of exact levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level<'a> {
    Exact(&'a str),
    Plus,
    /// `#`: this level's parent and everything below it.
    Hash,
    /// A widened deny pattern whose placeholder is the first level: every topic, those
    /// starting with `$` included (unlike `#`).
    Everything,
}

/// The levels of a valid topic filter or topic name.
fn levels(filter: &str) -> impl Iterator<Item = Level<'_>> {
    filter.split('/').map(|level| match level {
        "+" => Level::Plus,
        "#" => Level::Hash,
        _ => Level::Exact(level),
    })
}

/// Whether the first levels of two filters put them on opposite sides of [MQTT-4.7.2-1]: a
/// wildcard first level does not match a topic starting with `$`, and an exact `$` first level
/// matches only such topics, so the two filters share no topic.
fn dollar_apart(first_a: Option<Level<'_>>, first_b: Option<Level<'_>>) -> bool {
    let wildcard = |level| matches!(level, Some(Level::Plus | Level::Hash));
    let dollar = |level| matches!(level, Some(Level::Exact(exact)) if exact.starts_with('$'));
    (wildcard(first_a) && dollar(first_b)) || (dollar(first_a) && wildcard(first_b))
}

/// Whether `outer` matches every topic `inner` matches (both valid filters, as levels).
///
/// Walking both level by level: `#` in `outer` takes whatever `inner` has left (including
/// nothing: `a/#` matches `a`); `#` in `inner` can only be taken by `#` (it matches topics of
/// every depth from its parent down), or by `+/#` where that parent is not a topic: at the first
/// level (`+/#` matches exactly what `#` matches), and after an empty first level (`/#` cannot
/// match the empty topic [MQTT-4.7.3-1], so it matches exactly what `/+/#` matches); `+` takes
/// any one level; an exact level takes only itself.
fn contains<'a, 'b>(
    mut outer: impl Iterator<Item = Level<'a>>,
    mut inner: impl Iterator<Item = Level<'b>>,
) -> bool {
    let mut depth = 0;
    let mut inner_first_empty = false;
    loop {
        let (o, i) = (outer.next(), inner.next());
        if depth == 0 {
            if dollar_apart(o, i) {
                return false;
            }
            inner_first_empty = i == Some(Level::Exact(""));
        }
        let parent_is_no_topic = depth == 0 || (depth == 1 && inner_first_empty);
        match (o, i) {
            (Some(Level::Everything | Level::Hash), _) => return true,
            (Some(Level::Plus), Some(Level::Hash)) if parent_is_no_topic => {
                return outer.next() == Some(Level::Hash);
            }
            (_, Some(Level::Hash | Level::Everything)) => return false,
            (None, None) => return true,
            // One filter needs more levels than the other allows.
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(Level::Plus), Some(_)) => {}
            (Some(Level::Exact(a)), Some(Level::Exact(b))) if a == b => {}
            (Some(Level::Exact(_)), Some(_)) => return false,
        }
        depth += 1;
    }
}

/// Whether some topic matches both filters (both valid, as levels).
///
/// Walking both level by level: once either has `#` a common topic exists (complete the other
/// filter with any levels), unless that topic would be the empty one (`+` and `/#` meet only
/// there, and it is no topic [MQTT-4.7.3-1]); two exact levels must be equal; `+` meets
/// anything.
fn intersects<'a, 'b>(
    mut a: impl Iterator<Item = Level<'a>>,
    mut b: impl Iterator<Item = Level<'b>>,
) -> bool {
    let mut depth = 0;
    let mut first_empty = false;
    loop {
        let (x, y) = (a.next(), b.next());
        if depth == 0 {
            if dollar_apart(x, y) {
                return false;
            }
            first_empty = x == Some(Level::Exact("")) || y == Some(Level::Exact(""));
        }
        match (x, y) {
            (Some(Level::Everything), _) | (_, Some(Level::Everything)) => return true,
            // One filter is one level long and the other ends here in `#`: the common topic
            // is the first level alone.
            (Some(Level::Hash), None) | (None, Some(Level::Hash)) if depth == 1 => {
                return !first_empty;
            }
            (Some(Level::Hash), _) | (_, Some(Level::Hash)) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(Level::Exact(p)), Some(Level::Exact(q))) if p != q => return false,
            _ => {}
        }
        depth += 1;
    }
}

/// Splits off the first whitespace-separated word; the rest comes back trimmed.
fn first_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (text, ""),
    }
}

/// Why an ACL file was not loaded.
#[derive(Debug)]
pub enum AclError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Larger than [`ACL_FILE_BYTES_MAX`].
    TooLarge { path: PathBuf },
    /// A line that is not a rule; `line` counts from 1.
    Line {
        path: PathBuf,
        line: usize,
        problem: LineProblem,
    },
}

/// What is wrong with one line of an ACL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// Longer than [`ACL_LINE_BYTES_MAX`].
    TooLong,
    NotUtf8,
    UnknownKeyword(String),
    MissingUserName,
    MissingTopic,
    UnknownAccess(String),
    InvalidTopicFilter,
    /// `%u` or `%c` sharing a level with other text in a pattern.
    PartialSubstitution,
    /// More than [`ACL_RULES_MAX`] rules.
    TooManyRules,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclError::Read { path, error } => {
                write!(f, "acl_file `{}`: cannot read: {error}", path.display())
            }
            AclError::TooLarge { path } => write!(
                f,
                "acl_file `{}`: larger than {ACL_FILE_BYTES_MAX} bytes",
                path.display()
            ),
            AclError::Line {
                path,
                line,
                problem,
            } => write!(f, "acl_file `{}` line {line}: {problem}", path.display()),
        }
    }
}

impl std::error::Error for AclError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AclError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::TooLong => write!(f, "longer than {ACL_LINE_BYTES_MAX} bytes"),
            LineProblem::NotUtf8 => f.write_str("not UTF-8"),
            LineProblem::UnknownKeyword(word) => {
                write!(f, "`{word}` is not `user`, `topic` or `pattern`")
            }
            LineProblem::MissingUserName => f.write_str("`user` without a name"),
            LineProblem::MissingTopic => f.write_str("a rule without a topic filter"),
            LineProblem::UnknownAccess(word) => write!(
                f,
                "`{word}` is not read, write, readwrite or deny (a topic with a space needs one)"
            ),
            LineProblem::InvalidTopicFilter => f.write_str(
                "not a topic filter (`+` and `#` stand alone in their level, `#` only last)",
            ),
            LineProblem::PartialSubstitution => {
                f.write_str("`%u` and `%c` must be a whole level (`a/%u/b`, not `a/x%u`)")
            }
            LineProblem::TooManyRules => write!(f, "more than {ACL_RULES_MAX} rules"),
        }
    }
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
