//! The listener: a blocking `std::net` accept loop on a thread of its own, and one short-lived
//! thread per admin connection, at most `admin_connections_max` at once.
//!
//! Why threads and blocking sockets rather than a ring or a task runtime: the operations
//! listener serves a scraper every few seconds and an operator's occasional call, so its cost
//! does not matter, but its isolation does. On its own threads it can never delay a shard's
//! loop, however slow a client or a request; and plain blocking reads with timeouts are the
//! simplest code that bounds everything: a thread per connection, a deadline per request, a
//! limit on threads. One past the limit is answered 503 and closed at once by the accept loop.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use log::warn;

use super::Admin;
use super::request::{self, RequestLimits};
use super::routes::{self, Response};

/// After answering, what the client still sends is read and dropped for at most this long
/// before the close, so that an answer to a request whose body was not read (413) is not lost
/// to a reset (see `close_linger_ms` for the same on the MQTT listeners).
const LINGER: Duration = Duration::from_millis(500);
/// Bytes read and dropped while lingering, at most.
const LINGER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long the accept loop waits before accepting again after an error (EMFILE and the like).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Starts the accept loop on its own thread.
pub fn spawn(listener: TcpListener, admin: Arc<Admin>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("admin".to_owned())
        .spawn(move || accept_loop(&listener, &admin))?;
    Ok(())
}

fn accept_loop(listener: &TcpListener, admin: &Arc<Admin>) {
    let active = Arc::new(AtomicU32::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("admin listener: accept failed: {e}; retrying");
                std::thread::sleep(ACCEPT_RETRY);
                continue;
            }
        };
        let timeout = admin.timeout();
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        if active.fetch_add(1, Ordering::AcqRel) >= admin.settings.connections_max {
            active.fetch_sub(1, Ordering::AcqRel);
            // Answered without lingering: the accept loop must not wait on any client.
            let busy = Response::error(503, "too many admin connections; try again");
            let _ = (&stream).write_all(&busy.to_bytes());
            continue;
        }
        let (admin, count) = (Arc::clone(admin), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("admin-conn".to_owned())
            .spawn(move || {
                serve(stream, &admin);
                count.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::AcqRel);
            warn!("admin listener: cannot start a connection thread: {e}");
        }
    }
}

/// Reads one request, answers it and closes.
fn serve(mut stream: TcpStream, admin: &Admin) {
    let limits = RequestLimits {
        head_bytes_max: admin.settings.head_bytes_max as usize,
        body_bytes_max: admin.settings.body_bytes_max,
        deadline: Instant::now() + admin.timeout(),
    };
    let response = match request::read(&mut stream, limits) {
        Ok(mut request) => routes::route(admin, &mut request),
        Err(error) => match error.status() {
            Some((status, message)) => Response::error(status, message),
            None => return,
        },
    };
    finish(stream, &response);
}

/// Writes `response`, then shuts the write side and drains what the client still sends.
fn finish(mut stream: TcpStream, response: &Response) {
    if stream.write_all(&response.to_bytes()).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let until = Instant::now() + LINGER;
    let mut scratch = [0; 8192];
    let mut drained = 0;
    while drained < LINGER_BYTES_MAX && Instant::now() < until {
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}
