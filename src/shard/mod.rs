//! Thread-per-core: one shard per core, each with its own ring, connections and sessions.
