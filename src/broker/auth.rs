//! The authentication hook of MQTT 5 enhanced authentication (§4.12).
//!
//! A CONNECT with an Authentication Method is handed to the [`Authenticator`] plugged in with
//! [`Broker::set_authenticator`](super::Broker::set_authenticator); with none, or one serving
//! another method, it is refused with CONNACK 0x8C Bad authentication method [MQTT-4.12.0-1].
//! The hook decides in one step, at CONNECT: a multi-step exchange (AUTH 0x18) and
//! re-authentication (AUTH 0x19) are not offered, so an AUTH packet after CONNECT is a
//! Protocol Error [MQTT-4.12.0-2]. A CONNECT without a method is not handed to the hook.

use crate::protocol::mqtt::ReasonCode;

/// What the hook decides about a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDecision {
    Accept,
    /// Refused with this CONNACK reason code, e.g. 0x87 Not authorized or 0x86 Bad user name
    /// or password; it must be an error code valid in CONNACK.
    Refuse(ReasonCode),
}

/// What the hook is given: the CONNECT fields that take part in authentication.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// The Authentication Data property (§3.1.2.11.10), if any.
    pub data: Option<&'a [u8]>,
}

/// An authentication method the broker can serve. Called on the shard's thread, with no I/O
/// allowed: it must answer at once.
pub trait Authenticator {
    /// The Authentication Method name it serves (e.g. `SCRAM-SHA-1`), compared exactly.
    fn method(&self) -> &str;
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision;
}
