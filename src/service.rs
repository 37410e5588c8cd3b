//! The broker as a service: what the main thread tells the service manager while it waits for
//! signals. Readiness and stopping go to `$NOTIFY_SOCKET` (`net/sd_notify.rs`); with
//! `WatchdogSec=`, a ping every half interval, sent only while every shard's loop still turns
//! (`shard/heartbeat.rs`), so the manager restarts a broker whose shard hangs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::sd_notify::{self, Notifier, State};
use crate::net::sys::{self, Signal};
use crate::shard::{Heartbeats, Watch};

/// The watchdog's state: how often to ping, when next, and the heartbeats seen at the last
/// check.
struct Watchdog {
    interval: Duration,
    next_ping: Instant,
    watch: Watch,
}

pub struct Service {
    notifier: Option<Notifier>,
    watchdog: Option<Watchdog>,
    heartbeats: Arc<Heartbeats>,
}

impl Service {
    /// From the environment the manager set (nothing when run by hand). A malformed variable
    /// is logged and ignored: the broker runs the same without the manager's notifications.
    pub fn from_env(heartbeats: Arc<Heartbeats>) -> Service {
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            log::warn!("{e}; the service manager is not notified");
            None
        });
        let interval = match (&notifier, sd_notify::watchdog_interval()) {
            (Some(_), Ok(interval)) => interval,
            (None, Ok(_)) => None,
            (_, Err(e)) => {
                log::warn!("{e}; no watchdog pings");
                None
            }
        };
        let watchdog = interval.map(|interval| {
            log::info!(
                "watchdog: a ping every {} ms while every shard turns",
                interval.as_millis()
            );
            Watchdog {
                interval,
                next_ping: Instant::now() + interval,
                watch: Watch::new(&heartbeats),
            }
        });
        Service {
            notifier,
            watchdog,
            heartbeats,
        }
    }

    /// Tells the manager `state`; a failure is logged, never fatal: the manager's socket is
    /// outside the broker's control.
    pub fn notify(&self, state: State) {
        if let Some(notifier) = &self.notifier
            && let Err(e) = notifier.send(state)
        {
            log::warn!("cannot tell the service manager {}: {e}", state.message());
        }
    }

    /// Waits for a signal, pinging the watchdog on time meanwhile.
    pub fn wait_for_signal(&mut self) -> Signal {
        loop {
            let timeout = self
                .watchdog
                .as_ref()
                .map(|dog| dog.next_ping.saturating_duration_since(Instant::now()));
            if let Some(signal) = sys::wait_for_signal(timeout) {
                return signal;
            }
            self.ping_if_due(Instant::now());
        }
    }

    fn ping_if_due(&mut self, now: Instant) {
        let Some(dog) = &mut self.watchdog else {
            return;
        };
        if now < dog.next_ping {
            return;
        }
        dog.next_ping = now + dog.interval;
        let stalled = dog.watch.stalled(&self.heartbeats);
        if stalled.is_empty() {
            self.notify(State::Watchdog);
        } else {
            log::error!(
                "shards {stalled:?} did not turn for {} ms: no watchdog ping",
                dog.interval.as_millis()
            );
        }
    }
}
