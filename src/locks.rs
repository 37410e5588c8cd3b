//! Locks on the few memories shared with another thread (a bridge's crossings, the node's
//! delivered identities, the QoS stream's undelivered messages, the bucket's marks): one
//! way to take them.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// `mutex`, locked. A poisoned lock only means a thread panicked while it held it; nothing
/// here is left half-changed by a panic, so what it guards is whole and is used as it is.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
