//! The only code that touches sockets: io_uring operations and their memory, receive buffers,
//! listeners, send queues, and the few plain system calls around them. Every `unsafe` block of
//! the broker lives here.

pub mod allocator;
pub mod instance_lock;
pub mod io;
pub mod ktls;
pub mod listener;
mod op;
pub mod preamble;
pub mod sd_notify;
pub mod send_buf;
pub mod send_queue;
pub mod sys;
pub mod takeover;
mod tls_stream;
mod uring;

pub use uring::RingUnavailable;
