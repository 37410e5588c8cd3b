//! `fanfare passwd`: adds, changes and deletes users in a password file, with the options
//! `mosquitto_passwd` users know (`-c`, `-b`, `-D`).
//!
//! The file is rewritten whole and swapped in with a rename, so the broker never reads half a
//! file; every other line (comments, other users, entries made by `mosquitto_passwd`) is kept
//! byte for byte. A file that does not parse is refused rather than rewritten.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use zeroize::Zeroizing;

use super::password::{self, LINE_BYTES_MAX, Line, PasswordFile, PasswordFileError};

const USAGE: &str = "\
fanfare passwd: manage a password file (one `user:hash` line per user)

Usage: fanfare passwd [-c] FILE USER              set USER's password, asked twice on the terminal
       fanfare passwd [-c] -b FILE USER PASSWORD  set it from the command line
       fanfare passwd -D FILE USER                delete USER

Options:
  -c          create FILE with USER as its only entry, replacing any file there
  -b          batch: take the password from the command line (ps and shell history see it)
  -D          delete USER
  -h, --help  print this help

New passwords are hashed with argon2id (m=19 MiB, t=2, p=1). Entries made by mosquitto_passwd
($7$ and $6$) are read and kept as they are. FILE is replaced in one rename, keeping its other
lines, mode and owner; a file this command creates has mode 0600.

Exit status: 0 done, 1 failed (FILE unchanged), 2 bad command line.
";

/// Runs `fanfare passwd` with the arguments that follow `passwd`.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let result = parse_args(args).and_then(|command| match command {
        Some(command) => run(command),
        None => {
            print!("{USAGE}");
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ PasswdError::Usage(_)) => {
            eprintln!("fanfare passwd: {e}\nTry `fanfare passwd --help`.");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("fanfare passwd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A password, wiped from memory when dropped.
type Secret = Zeroizing<Vec<u8>>;

enum Action {
    /// Set the password: from the command line, or asked on the terminal when `None`.
    Set {
        create: bool,
        password: Option<Secret>,
    },
    Delete,
}

struct Command {
    file: PathBuf,
    user: String,
    action: Action,
}

/// `None` for `--help`.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Option<Command>, PasswdError> {
    use lexopt::prelude::*;
    let usage = |e: lexopt::Error| PasswdError::Usage(e.to_string());
    let mut parser = lexopt::Parser::from_args(args);
    let (mut create, mut batch, mut delete) = (false, false, false);
    let mut operands = Vec::new();
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('c') => create = true,
            Short('b') => batch = true,
            Short('D') => delete = true,
            Short('h') | Long("help") => return Ok(None),
            Value(value) => operands.push(value),
            _ => return Err(usage(arg.unexpected())),
        }
    }
    if delete && (create || batch) {
        return Err(PasswdError::Usage("-D goes with neither -c nor -b".into()));
    }
    let wanted = if batch { 3 } else { 2 };
    if operands.len() != wanted {
        let operands = if batch {
            "FILE USER PASSWORD"
        } else {
            "FILE USER"
        };
        return Err(PasswdError::Usage(format!("expected {operands}")));
    }
    let mut operands = operands.into_iter();
    let file = PathBuf::from(operands.next().unwrap_or_default());
    let user = operands.next().unwrap_or_default();
    let user = user
        .into_string()
        .map_err(|_| PasswdError::BadUser("is not UTF-8"))?;
    check_user(&user)?;
    let action = if delete {
        Action::Delete
    } else {
        let password = operands.next().map(|p| Zeroizing::new(p.into_vec()));
        Action::Set { create, password }
    };
    Ok(Some(Command { file, user, action }))
}

/// A user name the file can hold and read back as the same name.
fn check_user(user: &str) -> Result<(), PasswdError> {
    if user.is_empty() {
        return Err(PasswdError::BadUser("is empty"));
    }
    if user.contains(':') {
        return Err(PasswdError::BadUser(
            "contains `:`, which ends the name in the file",
        ));
    }
    if user.chars().any(char::is_control) {
        return Err(PasswdError::BadUser("contains a control character"));
    }
    if user.trim() != user {
        return Err(PasswdError::BadUser(
            "starts or ends with white space, which the file drops",
        ));
    }
    if user.starts_with('#') {
        return Err(PasswdError::BadUser(
            "starts with `#`, which makes the line a comment",
        ));
    }
    Ok(())
}

fn run(command: Command) -> Result<(), PasswdError> {
    let entry = match &command.action {
        Action::Set { password, .. } => {
            let password = match password {
                Some(p) => p.clone(),
                None => ask_password()?,
            };
            if password.is_empty() {
                return Err(PasswdError::EmptyPassword);
            }
            let entry = format!("{}:{}", command.user, password::hash_password(&password));
            if entry.len() > LINE_BYTES_MAX {
                return Err(PasswdError::BadUser("is too long for a line of the file"));
            }
            Some(entry)
        }
        Action::Delete => None,
    };
    let create = matches!(command.action, Action::Set { create: true, .. });
    let text = if create {
        String::new()
    } else {
        let text = password::read_bounded(&command.file).map_err(|e| match e {
            PasswordFileError::Read { path, error } if error.kind() == io::ErrorKind::NotFound => {
                PasswdError::NoFile(path)
            }
            e => PasswdError::File(e),
        })?;
        // Refuse to rewrite what cannot be read: the damage is named, not spread.
        PasswordFile::parse(&text, &command.file)?;
        text
    };
    let new_text = edit(&text, &command.user, entry.as_deref())?;
    // What is written must load: the same check the broker makes.
    PasswordFile::parse(&new_text, &command.file)?;
    replace_file(&command.file, new_text.as_bytes())
}

/// Asks for the password twice on the terminal, without echo.
fn ask_password() -> Result<Secret, PasswdError> {
    let ask = |prompt| {
        rpassword::prompt_password(prompt)
            .map(|p| Zeroizing::new(p.into_bytes()))
            .map_err(PasswdError::NoTerminal)
    };
    let first = ask("Password: ")?;
    let second = ask("Password again: ")?;
    if first != second {
        return Err(PasswdError::Mismatch);
    }
    Ok(first)
}

/// The file's text with `user`'s line replaced by `entry` (appended when the user is new), or
/// removed when `entry` is `None`. Every other line is kept as it was.
fn edit(text: &str, user: &str, entry: Option<&str>) -> Result<String, PasswdError> {
    let mut out = String::with_capacity(text.len() + entry.map_or(0, str::len) + 1);
    let mut found = false;
    for raw in text.split_inclusive('\n') {
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        let line = line.strip_suffix('\r').unwrap_or(line);
        match password::classify(line) {
            Ok(Line::Entry { user: u, .. }) if u == user => {
                found = true;
                if let Some(entry) = entry {
                    out.push_str(entry);
                    out.push_str(&raw[line.len()..]);
                }
            }
            _ => out.push_str(raw),
        }
    }
    match entry {
        None if !found => return Err(PasswdError::UnknownUser),
        Some(entry) if !found => {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(entry);
            out.push('\n');
        }
        _ => {}
    }
    Ok(out)
}

/// Writes `contents` to a new file beside `path` and renames it over `path`: readers see the old
/// file or the new one, never a mix. An existing file keeps its mode and owner (and stays
/// where a symbolic link points); a new one gets mode 0600, as it holds hashes.
fn replace_file(path: &Path, contents: &[u8]) -> Result<(), PasswdError> {
    let io_error = |what, path: &Path| {
        let path = path.to_owned();
        move |error| PasswdError::Io { what, path, error }
    };
    let (target, old) = match fs::metadata(path) {
        Ok(metadata) => (
            fs::canonicalize(path).map_err(io_error("cannot resolve", path))?,
            Some(metadata),
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (path.to_owned(), None),
        Err(e) => return Err(io_error("cannot read", path)(e)),
    };
    let mode = old
        .as_ref()
        .map_or(0o600, |m| m.permissions().mode() & 0o777);
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = OsString::from(".");
    temp_name.push(target.file_name().unwrap_or_default());
    temp_name.push(format!(".fanfare-passwd.{}", std::process::id()));
    let temp = dir.join(temp_name);

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(io_error("cannot create", &temp))?;
    let written = (|| {
        // The mode given at creation passes through the umask; this one is exact.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some(old) = &old {
            std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, &target)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_error("cannot write", &target)(error));
    }
    // The rename is durable once the directory is: without this a crash could bring back the
    // old file.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("cannot sync the directory of", &target))
}

enum PasswdError {
    Usage(String),
    BadUser(&'static str),
    EmptyPassword,
    NoTerminal(io::Error),
    Mismatch,
    UnknownUser,
    NoFile(PathBuf),
    File(PasswordFileError),
    Io {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

impl From<PasswordFileError> for PasswdError {
    fn from(e: PasswordFileError) -> Self {
        PasswdError::File(e)
    }
}

impl fmt::Display for PasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswdError::Usage(why) => write!(f, "{why}"),
            PasswdError::BadUser(why) => write!(f, "the user name {why}"),
            PasswdError::EmptyPassword => write!(f, "the password is empty; nothing written"),
            PasswdError::NoTerminal(e) => write!(
                f,
                "cannot ask for the password on a terminal ({e}); use -b to pass it"
            ),
            PasswdError::Mismatch => write!(f, "the passwords do not match; nothing written"),
            PasswdError::UnknownUser => write!(f, "no such user in the file; nothing written"),
            PasswdError::NoFile(path) => {
                write!(f, "no file {} (-c creates it)", path.display())
            }
            PasswdError::File(e) => write!(f, "{e}"),
            PasswdError::Io { what, path, error } => {
                write!(f, "{what} {}: {error}", path.display())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Command>, PasswdError> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn edit_replaces_only_the_user_line_and_keeps_line_ends() {
        let text = "# users\r\nalice:$6$old\r\n\nbob:$7$x\n";
        let out = edit(text, "alice", Some("alice:new")).ok();
        assert_eq!(out.as_deref(), Some("# users\r\nalice:new\r\n\nbob:$7$x\n"));
    }

    #[test]
    fn edit_appends_a_new_user_after_a_last_line_without_newline() {
        let out = edit("alice:a", "bob", Some("bob:b")).ok();
        assert_eq!(out.as_deref(), Some("alice:a\nbob:b\n"));
        let out = edit("", "bob", Some("bob:b")).ok();
        assert_eq!(out.as_deref(), Some("bob:b\n"));
    }

    #[test]
    fn edit_deletes_and_refuses_an_unknown_user() {
        let out = edit("alice:a\nbob:b\n", "alice", None).ok();
        assert_eq!(out.as_deref(), Some("bob:b\n"));
        assert!(matches!(
            edit("alice:a\n", "carol", None),
            Err(PasswdError::UnknownUser)
        ));
    }

    #[test]
    fn options_and_operands() {
        assert!(matches!(parse(&["--help"]), Ok(None)));
        let Ok(Some(command)) = parse(&["-cb", "f", "alice", "pw"]) else {
            panic!("-cb FILE USER PASSWORD parses");
        };
        assert!(matches!(
            command.action,
            Action::Set { create: true, password: Some(ref p) } if p.as_slice() == b"pw"
        ));
        assert!(matches!(
            parse(&["-D", "f", "alice"]),
            Ok(Some(Command {
                action: Action::Delete,
                ..
            }))
        ));
        for bad in [
            &["f"][..],
            &["-b", "f", "alice"],
            &["f", "alice", "extra"],
            &["-D", "-c", "f", "alice"],
            &["-x", "f", "alice"],
        ] {
            assert!(matches!(parse(bad), Err(PasswdError::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn user_names_that_would_not_read_back_are_refused() {
        for bad in ["", "a:b", "a\nb", " a", "a ", "#a"] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        assert!(check_user("älice@example.com").is_ok());
    }
}
