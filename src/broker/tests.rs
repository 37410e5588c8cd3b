//! Scenario tests: a `Broker` driven with packets and virtual time, its outbox decoded.
