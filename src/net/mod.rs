//! The only code that touches sockets: io_uring operations, buffer rings, listeners.
