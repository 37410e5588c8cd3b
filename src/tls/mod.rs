//! TLS for the mqtts and wss listeners, with rustls used sans-IO inside the shard loop: no
//! thread and no task per connection, the handshake being just another state of a connection.
//!
//! - `server_config.rs`: the certificates, keys and settings of `[tls]`, read from their files
//!   into rustls server configurations, one per listener kind (they differ in ALPN); built at
//!   start-up and again on SIGHUP, when new connections get the new ones.
//! - `session.rs`: one connection's TLS state, which `net/io.rs` feeds with ciphertext from the
//!   receive buffers and asks for ciphertext to send, sealing what is queued on the connection
//!   into as few records as possible per send.
//! - `identity.rs`: the name a client certificate gives its holder (`identity_as_username`).
//!
//! The crypto provider is *ring*: it builds with a C compiler alone (aws-lc-rs needs CMake, and
//! NASM or Go for some targets), and on x86-64 and ARMv8 its AES-GCM and ChaCha20-Poly1305 use
//! the CPU's AES and vector instructions, which is what sealing records per connection costs.

mod identity;
mod server_config;
mod session;

pub use identity::certificate_identity;
pub use server_config::{SharedTls, TlsServers, TlsSetupError};
pub use session::{SEAL_BYTES_MAX, TlsFailure, TlsSession};
