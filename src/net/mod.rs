//! The only code that touches sockets: io_uring operations, buffer rings, listeners.

pub mod connection;
pub mod listener;
pub mod send_queue;
pub mod sys;
pub mod uring;
