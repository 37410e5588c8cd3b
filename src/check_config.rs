//! `fanfare check-config FILE`: reads a configuration file as start-up does, validates it,
//! loads the certificates, keys, password, ACL and JWT key files it names, and prints the
//! effective configuration; or the errors, with a non-zero exit. Starts no broker, binds
//! nothing: safe to run next to the broker it is about to restart.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::auth::Policy;
use crate::config::{Config, effective_toml};
use crate::tls::TlsServers;

const USAGE: &str = "\
Usage: fanfare check-config FILE

Reads FILE as `fanfare --config FILE` would, loads the files it names, and prints the
effective configuration (defaults included) as TOML. On errors prints them and exits 1.
";

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    let path = match args.as_slice() {
        [arg] if arg == "-h" || arg == "--help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [path] => path.to_string_lossy().into_owned(),
        _ => {
            eprint!("fanfare check-config: expects one FILE\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match check(&path) {
        Ok(config) => {
            print!("{}", effective_toml(&config));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in errors {
                eprintln!("fanfare check-config: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The configuration in `path`, or every error found. A file that does not parse or validate
/// stops the check there; otherwise both the TLS and the auth files are tried, so one run
/// reports both.
fn check(path: &str) -> Result<Config, Vec<String>> {
    let config = Config::read_file(path).map_err(|e| vec![e.to_string()])?;
    config.validate().map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    if config.mqtts.is_some() || config.wss.is_some() {
        // Whether keys go to the kernel changes only what rustls lets out, not what loads.
        if let Err(e) = TlsServers::load(&config.tls, false) {
            errors.push(e.to_string());
        }
    }
    if let Err(e) = Policy::load(&config.auth, 0) {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}
