//! The password file: one `user:hash` line per user, blank lines and `#` comments between them.
//! It is Mosquitto's `password_file` format, so a file made by `mosquitto_passwd` works
//! unchanged; `fanfare passwd` writes new entries as argon2id.
//!
//! Hashes accepted:
//! - `$argon2id$v=19$m=..,t=..,p=..$SALT$HASH`: argon2id in the PHC string format, what
//!   [`hash_password`] writes (the `argon2` crate's defaults: m=19 MiB, t=2, p=1).
//! - `$7$ITERATIONS$SALT$HASH`: Mosquitto 2.x, PBKDF2-HMAC-SHA512 of the password with a 12-byte
//!   salt, 64 bytes of output; salt and hash in standard base64 with padding.
//! - `$6$SALT$HASH`: Mosquitto 1.x, a single SHA-512 of the password followed by the 12-byte
//!   salt (not sha512-crypt, whose `$6$` strings look alike).
//!
//! Every entry is checked when the file is parsed, so a damaged line stops loading and is
//! named (file and line; never the hash). Verifying is slow on purpose: callers run
//! [`PasswordHash::verify`] off the shard threads.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, PasswordHasher, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

/// Longest line accepted, in bytes, line end excluded. An argon2id entry with the default
/// parameters takes about 100 bytes and a `$7$` entry about 120, which leaves room for user
/// names of several hundred bytes; a longer line is damage, not a user.
pub const LINE_BYTES_MAX: usize = 1024;

/// Largest file accepted, in bytes. The parsed file stays in memory while the broker runs, at
/// roughly its own size: 64 MiB holds about 500,000 argon2id users.
pub const FILE_BYTES_MAX: usize = 64 << 20;

/// Most PBKDF2 iterations a `$7$` entry may ask for. Each check of that user's password costs
/// this many HMAC-SHA512 rounds (Mosquitto writes 101); a million is about a second of CPU.
pub const PBKDF2_ITERATIONS_MAX: u32 = 1_000_000;

/// Most memory an argon2id entry may ask for, in KiB: each check of that user's password
/// allocates it. The default is 19 MiB.
pub const ARGON2_MEMORY_KIB_MAX: u32 = 256 * 1024;

/// Most argon2id passes (`t`) an entry may ask for: each one is another sweep over the memory.
pub const ARGON2_TIME_COST_MAX: u32 = 16;

/// Most argon2id lanes (`p`) an entry may ask for: they are computed one after another here.
pub const ARGON2_LANES_MAX: u32 = 16;

/// Salt length of Mosquitto's hashes, in bytes (`SALT_LEN` in its source).
const MOSQUITTO_SALT_BYTES: usize = 12;

/// Output length of Mosquitto's hashes, in bytes: one SHA-512 digest.
const MOSQUITTO_HASH_BYTES: usize = 64;

/// Users and their password hashes, as read from a password file.
#[derive(Clone, Debug)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
}

impl PasswordFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = read_bounded(path)?;
        PasswordFile::parse(&text, path)
    }

    /// Parses the text of a password file; `path_for_errors` names it in errors.
    pub fn parse(text: &str, path_for_errors: &Path) -> Result<PasswordFile, PasswordFileError> {
        if text.len() > FILE_BYTES_MAX {
            return Err(PasswordFileError::TooLarge {
                path: path_for_errors.to_owned(),
            });
        }
        let at = |line: usize, problem: LineProblem| PasswordFileError::Line {
            path: path_for_errors.to_owned(),
            line,
            problem,
        };
        let mut users = HashMap::new();
        for (index, line) in lines(text).enumerate() {
            let number = index + 1;
            let Line::Entry { user, hash } = classify(line).map_err(|p| at(number, p))? else {
                continue;
            };
            let hash = PasswordHash::parse(hash).map_err(|p| at(number, p))?;
            if users.insert(user.to_owned(), hash).is_some() {
                let first_line = first_line_of(text, user);
                return Err(at(number, LineProblem::DuplicateUser { first_line }));
            }
        }
        Ok(PasswordFile { users })
    }

    /// The hash on file for `user`, if there is one.
    pub fn get(&self, user: &str) -> Option<&PasswordHash> {
        self.users.get(user)
    }

    /// How many users the file holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Reads a whole password file, refusing one over [`FILE_BYTES_MAX`] or not UTF-8.
pub(crate) fn read_bounded(path: &Path) -> Result<String, PasswordFileError> {
    let read_error = |error| PasswordFileError::Read {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file at the limit from a larger one.
    file.take(FILE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > FILE_BYTES_MAX {
        return Err(PasswordFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        PasswordFileError::Line {
            path: path.to_owned(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            problem: LineProblem::NotUtf8,
        }
    })
}

/// The file's lines, numbered from 1 by their position, without their `\n` or `\r\n`.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
}

/// What one line of the file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// Blank, or a `#` comment.
    Nothing,
    /// `user:hash`, both trimmed of surrounding blanks as Mosquitto does; the hash not yet
    /// checked.
    Entry { user: &'a str, hash: &'a str },
}

/// Splits one line (without its line end) into user and hash.
pub(crate) fn classify(line: &str) -> Result<Line<'_>, LineProblem> {
    if line.len() > LINE_BYTES_MAX {
        return Err(LineProblem::TooLong);
    }
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Nothing);
    }
    // User names cannot hold ':' and no accepted hash does, so the first one splits.
    let (user, hash) = line.split_once(':').ok_or(LineProblem::NoSeparator)?;
    let (user, hash) = (user.trim(), hash.trim());
    if user.is_empty() {
        return Err(LineProblem::EmptyUser);
    }
    if hash.is_empty() {
        return Err(LineProblem::EmptyHash);
    }
    Ok(Line::Entry { user, hash })
}

/// The number of the first line that names `user`; only asked once a second one did.
fn first_line_of(text: &str, user: &str) -> usize {
    lines(text)
        .position(|line| matches!(classify(line), Ok(Line::Entry { user: u, .. }) if u == user))
        .map_or(0, |index| index + 1)
}

/// A password hash from the file, checked and decoded.
#[derive(Clone)]
pub enum PasswordHash {
    /// `$argon2id$...`: written by `fanfare passwd`.
    Argon2id(Argon2idHash),
    /// `$7$...`: Mosquitto 2.x, PBKDF2-HMAC-SHA512.
    MosquittoPbkdf2(MosquittoPbkdf2Hash),
    /// `$6$...`: Mosquitto 1.x, SHA-512 of password then salt.
    MosquittoSha512(MosquittoSha512Hash),
}

/// An argon2id hash: its parameters, salt and expected output.
#[derive(Clone)]
pub struct Argon2idHash {
    params: argon2::Params,
    salt: Box<[u8]>,
    hash: Box<[u8]>,
}

/// A Mosquitto `$7$` hash.
#[derive(Clone)]
pub struct MosquittoPbkdf2Hash {
    iterations: NonZeroU32,
    salt: [u8; MOSQUITTO_SALT_BYTES],
    hash: [u8; MOSQUITTO_HASH_BYTES],
}

/// A Mosquitto `$6$` hash.
#[derive(Clone)]
pub struct MosquittoSha512Hash {
    salt: [u8; MOSQUITTO_SALT_BYTES],
    hash: [u8; MOSQUITTO_HASH_BYTES],
}

impl PasswordHash {
    /// Whether `password` hashes to this entry. Slow by design (argon2id takes tens of
    /// milliseconds and 19 MiB by default): not for a shard thread. The final comparison is
    /// constant-time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Argon2id(h) => {
                let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, h.params.clone());
                let mut computed = vec![0u8; h.hash.len()];
                // Fails only for a password over 4 GiB, which no MQTT packet carries.
                argon2
                    .hash_password_into(password, &h.salt, &mut computed)
                    .is_ok()
                    && bool::from(computed.ct_eq(&h.hash))
            }
            PasswordHash::MosquittoPbkdf2(h) => {
                let mut computed = [0u8; MOSQUITTO_HASH_BYTES];
                ring::pbkdf2::derive(
                    ring::pbkdf2::PBKDF2_HMAC_SHA512,
                    h.iterations,
                    &h.salt,
                    password,
                    &mut computed,
                );
                computed.ct_eq(&h.hash).into()
            }
            PasswordHash::MosquittoSha512(h) => {
                let mut context = ring::digest::Context::new(&ring::digest::SHA512);
                context.update(password);
                context.update(&h.salt);
                context.finish().as_ref().ct_eq(&h.hash).into()
            }
        }
    }

    /// The scheme's name, for logs: never the hash itself.
    pub fn scheme(&self) -> &'static str {
        match self {
            PasswordHash::Argon2id(_) => "argon2id",
            PasswordHash::MosquittoPbkdf2(_) => "mosquitto $7$ (PBKDF2-SHA512)",
            PasswordHash::MosquittoSha512(_) => "mosquitto $6$ (SHA-512)",
        }
    }

    /// Checks and decodes the hash part of a line.
    fn parse(text: &str) -> Result<PasswordHash, LineProblem> {
        if text.starts_with("$argon2id$") {
            parse_argon2id(text).map(PasswordHash::Argon2id)
        } else if let Some(rest) = text.strip_prefix("$7$") {
            parse_mosquitto_pbkdf2(rest).map(PasswordHash::MosquittoPbkdf2)
        } else if let Some(rest) = text.strip_prefix("$6$") {
            let (salt, hash) = parse_mosquitto_salt_hash(rest, "$6$")?;
            Ok(PasswordHash::MosquittoSha512(MosquittoSha512Hash {
                salt,
                hash,
            }))
        } else if text.starts_with('$') {
            Err(LineProblem::UnknownScheme)
        } else {
            Err(LineProblem::PlainText)
        }
    }
}

/// Only the scheme: a hash must not reach a log through `{:?}`.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({})", self.scheme())
    }
}

fn parse_argon2id(text: &str) -> Result<Argon2idHash, LineProblem> {
    let malformed = LineProblem::Malformed("an $argon2id$ entry that is not a valid PHC string");
    let phc = argon2::PasswordHash::new(text).map_err(|_| malformed)?;
    if phc.version != Some(Version::V0x13.into()) {
        return Err(LineProblem::Malformed(
            "an $argon2id$ entry whose version is not v=19",
        ));
    }
    let params = argon2::Params::try_from(&phc).map_err(|_| malformed)?;
    let (Some(salt), Some(hash)) = (phc.salt, phc.hash) else {
        return Err(malformed);
    };
    if params.m_cost() > ARGON2_MEMORY_KIB_MAX {
        return Err(LineProblem::TooCostly(
            "its argon2id m is above ARGON2_MEMORY_KIB_MAX",
        ));
    }
    if params.t_cost() > ARGON2_TIME_COST_MAX {
        return Err(LineProblem::TooCostly(
            "its argon2id t is above ARGON2_TIME_COST_MAX",
        ));
    }
    if params.p_cost() > ARGON2_LANES_MAX {
        return Err(LineProblem::TooCostly(
            "its argon2id p is above ARGON2_LANES_MAX",
        ));
    }
    Ok(Argon2idHash {
        params,
        salt: salt.as_ref().into(),
        hash: hash.as_bytes().into(),
    })
}

fn parse_mosquitto_pbkdf2(rest: &str) -> Result<MosquittoPbkdf2Hash, LineProblem> {
    let (iterations, rest) = rest.split_once('$').ok_or(LineProblem::Malformed(
        "a $7$ entry without its iteration count",
    ))?;
    let iterations = iterations.parse::<NonZeroU32>().map_err(|_| {
        LineProblem::Malformed("a $7$ entry whose iteration count is not 1 or more")
    })?;
    if iterations.get() > PBKDF2_ITERATIONS_MAX {
        return Err(LineProblem::TooCostly(
            "its $7$ iterations are above PBKDF2_ITERATIONS_MAX",
        ));
    }
    let (salt, hash) = parse_mosquitto_salt_hash(rest, "$7$")?;
    Ok(MosquittoPbkdf2Hash {
        iterations,
        salt,
        hash,
    })
}

/// `SALT$HASH` in standard base64: 12 bytes of salt, 64 of hash, as Mosquitto requires.
fn parse_mosquitto_salt_hash(
    text: &str,
    scheme: &'static str,
) -> Result<([u8; MOSQUITTO_SALT_BYTES], [u8; MOSQUITTO_HASH_BYTES]), LineProblem> {
    let bad_salt = LineProblem::MosquittoField {
        scheme,
        field: "salt",
        bytes: MOSQUITTO_SALT_BYTES,
    };
    let bad_hash = LineProblem::MosquittoField {
        scheme,
        field: "hash",
        bytes: MOSQUITTO_HASH_BYTES,
    };
    let (salt, hash) = text.split_once('$').ok_or(bad_hash)?;
    Ok((
        decode_exact(salt).ok_or(bad_salt)?,
        decode_exact(hash).ok_or(bad_hash)?,
    ))
}

/// Standard base64 that decodes to exactly `N` bytes.
fn decode_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Base64 takes 4 characters per 3 bytes: anything longer cannot be `N` bytes, and is not
    // decoded at all.
    if text.len() > N.div_ceil(3) * 4 {
        return None;
    }
    STANDARD.decode(text).ok()?.try_into().ok()
}

/// A new argon2id entry for `password`, in the PHC string format, with a fresh 16-byte random
/// salt and the `argon2` crate's default parameters (m=19 MiB, t=2, p=1, as OWASP recommends).
pub fn hash_password(password: &[u8]) -> String {
    Argon2::default()
        .hash_password(password)
        .expect("argon2 fails only without a system RNG or for a password over 4 GiB")
        .to_string()
}

/// What is wrong with one line of the file. Never carries the hash or a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineProblem {
    TooLong,
    NotUtf8,
    NoSeparator,
    EmptyUser,
    EmptyHash,
    DuplicateUser {
        first_line: usize,
    },
    PlainText,
    UnknownScheme,
    Malformed(&'static str),
    MosquittoField {
        scheme: &'static str,
        field: &'static str,
        bytes: usize,
    },
    TooCostly(&'static str),
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::TooLong => write!(f, "longer than {LINE_BYTES_MAX} bytes"),
            LineProblem::NotUtf8 => write!(f, "not UTF-8"),
            LineProblem::NoSeparator => write!(f, "not `user:hash` (no `:`)"),
            LineProblem::EmptyUser => write!(f, "no user name before the `:`"),
            LineProblem::EmptyHash => write!(f, "no hash after the `:`"),
            LineProblem::DuplicateUser { first_line } => {
                write!(f, "the user is already on line {first_line}")
            }
            LineProblem::PlainText => write!(
                f,
                "not a hash (a plain-text password?): set it again with `fanfare passwd`"
            ),
            LineProblem::UnknownScheme => write!(
                f,
                "unknown hash scheme: expected $argon2id$, $7$ or $6$ (mosquitto_passwd)"
            ),
            LineProblem::Malformed(what) => write!(f, "{what}"),
            LineProblem::MosquittoField {
                scheme,
                field,
                bytes,
            } => write!(
                f,
                "a {scheme} entry whose {field} is not {bytes} bytes of base64"
            ),
            LineProblem::TooCostly(what) => write!(f, "too costly to check: {what}"),
        }
    }
}

/// Why a password file could not be used.
#[derive(Debug)]
pub enum PasswordFileError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    TooLarge {
        path: PathBuf,
    },
    Line {
        path: PathBuf,
        line: usize,
        problem: LineProblem,
    },
}

impl fmt::Display for PasswordFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordFileError::Read { path, error } => {
                write!(f, "cannot read password file {}: {error}", path.display())
            }
            PasswordFileError::TooLarge { path } => write!(
                f,
                "password file {} is larger than {FILE_BYTES_MAX} bytes",
                path.display()
            ),
            PasswordFileError::Line {
                path,
                line,
                problem,
            } => write!(
                f,
                "password file {}, line {line}: {problem}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PasswordFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PasswordFileError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by mosquitto_passwd 2.0.11: `-c -b` (alice), `-H sha512 -b` (bob), `-b` (carol),
    // `-I 1000 -b` (dave).
    const MOSQUITTO_FILE: &str = "\
alice:$7$101$J1jOBhoSX4mRsWJ2$BVhB39rCAHHoXaQLO95sQ6i/1Gd+mJflGNNfSJ49Yt6H99Kbs4mM4nxNs1CYI7EY1Lv7OQrXK0U1sjoH/HMXWg==
bob:$6$zNdF4dfagFKxqheF$RhY5P24rmW2tcRObCBsX/bBKq+AGD8LsZDYtMSQYN9U6ZzmWnrRNwlHJ32Hl2E1YyZob4LKKbmlPKFhpfev33g==
carol:$7$101$CFiSYB43mf4+AxII$sIZ4jAhynXE+xxp4381cbN/IWMVExGRlZma7ViJMgPzQFdYMPl5ohic8JYL1rghF/79PPnu+kpQeeImG+EJXng==
dave:$7$1000$l7PkOmXMtkNLGYTR$tgq3XDW30+tsBhPTMzWb4+lJJkeSuN2ySgger9Kc8tWeLvrDASDV5TMJqoIRshluUvPkJlApg+igw+gv9M5Xdw==
";

    // Made by another argon2id implementation (OpenSSL's, through Python's `cryptography`):
    // the crate's defaults, and small parameters with two lanes.
    const ARGON2ID_DEFAULT: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZmFuZmFyZS12ZWN0b3ItMQ$3e+yuAdzK0RUuM2JsYcb4a2mNESDFEPOR9TI5mUvHg4";
    const ARGON2ID_SMALL: &str = "$argon2id$v=19$m=64,t=1,p=2$MDEyMzQ1Njc4OWFiY2RlZg$5PpdkDx2wG3XCWgn19DckJdrEZtAtspeJvOfByL0APA";

    fn parse(text: &str) -> Result<PasswordFile, PasswordFileError> {
        PasswordFile::parse(text, Path::new("/etc/fanfare/passwd"))
    }

    /// The line number and problem of a parse error.
    fn error_at(text: &str) -> (usize, LineProblem) {
        match parse(text) {
            Err(PasswordFileError::Line { line, problem, .. }) => (line, problem),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    fn hash(text: &str) -> PasswordHash {
        match PasswordHash::parse(text) {
            Ok(hash) => hash,
            Err(problem) => panic!("{problem}"),
        }
    }

    #[test]
    fn mosquitto_entries_verify_their_passwords_only() {
        let file = parse(MOSQUITTO_FILE).expect("a mosquitto_passwd file parses");
        assert_eq!(file.len(), 4);
        for (user, password, scheme) in [
            ("alice", "correct horse", "$7$"),
            ("bob", "hunter2", "$6$"),
            ("carol", "pässwörd with spaces", "$7$"),
            ("dave", "x", "$7$"),
        ] {
            let hash = file.get(user).expect("the user is on file");
            assert!(hash.scheme().contains(scheme), "{user}");
            assert!(hash.verify(password.as_bytes()), "{user}");
            assert!(!hash.verify(b""), "{user}");
            assert!(!hash.verify(format!("{password} ").as_bytes()), "{user}");
            assert!(!hash.verify(&password.as_bytes()[1..]), "{user}");
        }
        assert!(file.get("eve").is_none());
    }

    #[test]
    fn argon2id_vectors_verify_their_passwords_only() {
        let h = hash(ARGON2ID_DEFAULT);
        assert!(h.verify(b"correct horse battery staple"));
        assert!(!h.verify(b"correct horse battery stapler"));
        let h = hash(ARGON2ID_SMALL);
        assert!(h.verify("naïve".as_bytes()));
        assert!(!h.verify(b"naive"));
    }

    #[test]
    fn new_hashes_are_argon2id_with_the_defaults_and_a_fresh_salt() {
        let a = hash_password(b"s3cret");
        let b = hash_password(b"s3cret");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b);
        assert!(hash(&a).verify(b"s3cret"));
        assert!(!hash(&a).verify(b"s3creT"));
    }

    #[test]
    fn blank_lines_comments_blanks_and_crlf_are_allowed() {
        let text = format!(
            "# users of the demo\r\n\r\n   \n  # indented comment\n  eve : {ARGON2ID_SMALL} \r\n\n"
        );
        let file = parse(&text).expect("parses");
        assert_eq!(file.len(), 1);
        assert!(
            file.get("eve")
                .is_some_and(|h| h.verify("naïve".as_bytes()))
        );
        assert!(parse("").is_ok_and(|f| f.is_empty()));
    }

    #[test]
    fn errors_name_the_file_and_the_line() {
        let text = format!("# ok\n\nalice:{ARGON2ID_SMALL}\nbob\n");
        let err = parse(&text).expect_err("line 4 has no hash");
        let message = err.to_string();
        assert!(message.contains("/etc/fanfare/passwd"), "{message}");
        assert!(message.contains("line 4"), "{message}");
        assert_eq!(error_at(&text), (4, LineProblem::NoSeparator));
    }

    #[test]
    fn each_kind_of_bad_line_is_named() {
        let seven = MOSQUITTO_FILE.lines().next().unwrap_or_default();
        let (_, seven) = seven.split_once(':').unwrap_or_default();
        let long_user = "u".repeat(LINE_BYTES_MAX);
        let cases: Vec<(String, LineProblem)> = vec![
            (format!("{long_user}:{seven}"), LineProblem::TooLong),
            (format!(":{seven}"), LineProblem::EmptyUser),
            ("alice:  ".into(), LineProblem::EmptyHash),
            ("alice:hunter2".into(), LineProblem::PlainText),
            ("alice:$2y$10$abcdefghijklmnopqrstuv".into(), LineProblem::UnknownScheme),
            ("alice:$argon2i$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$5PpdkDx2wG3XCWgn19DckJdrEZtAtspeJvOfByL0APA".into(), LineProblem::UnknownScheme),
            ("alice:$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg".into(), LineProblem::Malformed("an $argon2id$ entry that is not a valid PHC string")),
            ("alice:$argon2id$v=16$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$5PpdkDx2wG3XCWgn19DckJdrEZtAtspeJvOfByL0APA".into(), LineProblem::Malformed("an $argon2id$ entry whose version is not v=19")),
            ("alice:$7$0$J1jOBhoSX4mRsWJ2$AAAA".into(), LineProblem::Malformed("a $7$ entry whose iteration count is not 1 or more")),
            ("alice:$7$101".into(), LineProblem::Malformed("a $7$ entry without its iteration count")),
            (format!("alice:{}", seven.replacen("J1jO", "J1j", 1)), LineProblem::MosquittoField { scheme: "$7$", field: "salt", bytes: 12 }),
            (format!("alice:{}", seven.replacen("==", "", 1)), LineProblem::MosquittoField { scheme: "$7$", field: "hash", bytes: 64 }),
            ("alice:$6$zNdF4dfagFKxqheF".into(), LineProblem::MosquittoField { scheme: "$6$", field: "hash", bytes: 64 }),
        ];
        for (line, problem) in cases {
            let text = format!("# first\n{line}\n");
            assert_eq!(error_at(&text), (2, problem), "{line}");
        }
    }

    #[test]
    fn costs_above_the_limits_are_refused() {
        let salt_hash = "MDEyMzQ1Njc4OWFiY2RlZg$5PpdkDx2wG3XCWgn19DckJdrEZtAtspeJvOfByL0APA";
        let too_much_memory = format!(
            "$argon2id$v=19$m={},t=1,p=1${salt_hash}",
            ARGON2_MEMORY_KIB_MAX + 1
        );
        let too_many_passes = format!(
            "$argon2id$v=19$m=64,t={},p=1${salt_hash}",
            ARGON2_TIME_COST_MAX + 1
        );
        let too_many_lanes = format!(
            "$argon2id$v=19$m=4096,t=1,p={}${salt_hash}",
            ARGON2_LANES_MAX + 1
        );
        let seven = "J1jOBhoSX4mRsWJ2$BVhB39rCAHHoXaQLO95sQ6i/1Gd+mJflGNNfSJ49Yt6H99Kbs4mM4nxNs1CYI7EY1Lv7OQrXK0U1sjoH/HMXWg==";
        let too_many_iterations = format!("$7${}${seven}", PBKDF2_ITERATIONS_MAX + 1);
        for entry in [
            too_much_memory,
            too_many_passes,
            too_many_lanes,
            too_many_iterations,
        ] {
            let (line, problem) = error_at(&format!("alice:{entry}"));
            assert_eq!(line, 1);
            assert!(
                matches!(problem, LineProblem::TooCostly(_)),
                "{entry}: {problem}"
            );
        }
    }

    #[test]
    fn a_second_line_for_a_user_names_the_first() {
        let text =
            format!("alice:{ARGON2ID_SMALL}\nbob:{ARGON2ID_SMALL}\n\n alice :{ARGON2ID_DEFAULT}\n");
        assert_eq!(
            error_at(&text),
            (4, LineProblem::DuplicateUser { first_line: 1 })
        );
    }

    #[test]
    fn errors_never_show_the_hash() {
        let (_, seven) = MOSQUITTO_FILE.split_once(':').unwrap_or_default();
        let salt = "J1jOBhoSX4mRsWJ2";
        let text = format!(
            "alice:{}",
            seven
                .lines()
                .next()
                .unwrap_or_default()
                .replacen(salt, "J1jO*hoSX4mRsWJ2", 1)
        );
        let message = parse(&text).expect_err("bad salt").to_string();
        assert!(!message.contains("BVhB39"), "{message}");
        assert!(!message.contains("J1jO"), "{message}");
        let message = parse("alice:hunter2").expect_err("plain text").to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert_eq!(
            format!("{:?}", hash(ARGON2ID_SMALL)),
            "PasswordHash(argon2id)"
        );
    }

    #[test]
    fn load_reads_the_file_and_names_what_it_cannot_read() {
        let dir = std::env::temp_dir().join(format!("fanfare-password-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("passwd");
        std::fs::write(&path, MOSQUITTO_FILE).expect("write");
        assert_eq!(PasswordFile::load(&path).map(|f| f.len()).ok(), Some(4));

        std::fs::write(&path, b"# ok\nalice:\xff\n").expect("write");
        let err = PasswordFile::load(&path).expect_err("not UTF-8");
        assert!(
            matches!(
                err,
                PasswordFileError::Line {
                    line: 2,
                    problem: LineProblem::NotUtf8,
                    ..
                }
            ),
            "{err}"
        );

        let missing = dir.join("missing");
        let err = PasswordFile::load(&missing).expect_err("missing");
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn text_over_the_file_limit_is_refused() {
        let text = "#".repeat(FILE_BYTES_MAX + 1);
        assert!(matches!(
            parse(&text),
            Err(PasswordFileError::TooLarge { .. })
        ));
    }
}
