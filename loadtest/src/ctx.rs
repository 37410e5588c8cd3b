//! What a worker thread keeps for its connections, and how one of them is opened: the shared
//! piece of the worker (`run.rs`) and of the retained scenario (`retained.rs`).

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::config::{Config, SubSpec};
use crate::conn::{Conn, FailKind, SharedWriter};
use crate::stats::{self, Local, Shared};

pub struct Ctx {
    pub cfg: Arc<Config>,
    pub shared: Arc<Shared>,
    pub worker: usize,
    pub(crate) local: RefCell<Local>,
    pub(crate) writers: RefCell<Vec<SharedWriter>>,
    pub(crate) live: Cell<usize>,
}

fn client_id(ctx: &Ctx, index: usize) -> String {
    ctx.cfg.client_id.replace("%i", &index.to_string())
}

fn count_failure(shared: &Shared, kind: FailKind, error: &anyhow::Error) {
    shared.counters.conn_failed[kind as usize].fetch_add(1, Relaxed);
    shared.note_error(format!("{kind:?}: {error:#}"));
}

/// Opens a connection, subscribing if asked, and records the set-up time. `publisher_only`:
/// it will publish and not subscribe, so it goes to `--pub-url` if given.
pub async fn establish(
    ctx: &Ctx,
    index: usize,
    sub: Option<&SubSpec>,
    publisher_only: bool,
) -> Option<Conn> {
    let shared = &ctx.shared;
    let t0 = stats::now_ns();
    let target = &ctx.cfg.target;
    let endpoint = target.endpoint(index, publisher_only);
    let opened = Conn::open(target, endpoint, index, &client_id(ctx, index)).await;
    let result = match opened {
        Err(e) => Err(e),
        Ok(mut conn) => match sub {
            Some(sub) => conn
                .subscribe(&sub.filter, ctx.cfg.qos, ctx.cfg.target.timeout)
                .await
                .map(|()| conn),
            None => Ok(conn),
        },
    };
    let conn = match result {
        Err(e) => {
            count_failure(shared, e.kind, &e.error);
            return None;
        }
        Ok(conn) => conn,
    };
    let t1 = stats::now_ns();
    if let Some((negotiated, handshake_ns, resumed)) = &conn.tls {
        if *resumed {
            shared.counters.tls_resumed.fetch_add(1, Relaxed);
        }
        shared
            .tls_handshake
            .lock()
            .expect("no panics while held")
            .saturating_record((*handshake_ns).max(1));
        shared
            .tls_negotiated
            .lock()
            .expect("no panics while held")
            .get_or_insert_with(|| negotiated.clone());
    }
    shared
        .connect_latency
        .lock()
        .expect("no panics while held")
        .saturating_record(t1.saturating_sub(t0).max(1));
    shared.counters.conn_ok.fetch_add(1, Relaxed);
    shared.first_conn_ns.fetch_min(t0, Relaxed);
    shared.last_conn_ns.fetch_max(t1, Relaxed);
    Some(conn)
}
