//! Who may connect, publish and subscribe: credentials checked at CONNECT (a password file, a
//! JWT in the password field), topic rules (an ACL file, or the rules a token carries).
//!
//! Everything here is sans-IO and clock-free, like `protocol/`: files are parsed from text the
//! caller read, time comes in as a parameter. Slow checks (password hashes) are run by the
//! caller off the shard threads.

pub mod acl;
pub mod jwt;
// `fanfare passwd`: the one part that does its own I/O (the file, the terminal).
pub mod passwd_cli;
pub mod password;
