//! Plain HTTP on the WebSocket listener: the built-in demo page and `fanfare.js`, and the
//! files of an optional directory, so a browser needs nothing installed to subscribe.
//!
//! Sans-IO except for [`site`]'s file reads. The GET or HEAD head arrives parsed
//! ([`crate::protocol::http::RequestHead`], the same parse that refused the upgrade); [`path`]
//! turns its target into a path that cannot leave the served directory, [`response`] writes
//! the answer (ETag/304, gzip), [`mime`] names the type. Every response closes the
//! connection: a page loads a handful of files, and a closed socket holds no broker memory.

pub mod mime;
pub mod path;
pub mod response;
pub mod site;

pub use response::Reply;
pub use site::{Site, SiteConfig};
