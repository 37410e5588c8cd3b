//! The checks behind fanfare's fuzz targets, one public function per target.
//!
//! Each file in `fuzz_targets/` is one line handing libFuzzer's bytes to a function here, so the
//! same checks run on stable too: `cargo test` in this directory replays every file of
//! `seeds/` through them. Every `use fanfare::...` of the fuzz crate is in these modules.
//!
//! | target           | function            | what it feeds                                      |
//! |------------------|---------------------|----------------------------------------------------|
//! | `mqtt_v311`      | [`mqtt::v311`]      | `decode` before CONNECT and at 3.1 / 3.1.1         |
//! | `mqtt_v5`        | [`mqtt::v5`]        | `decode` before CONNECT and at 5.0                 |
//! | `ws_frame`       | [`ws::frames`]      | `FrameDecoder::feed`, whole and in pieces          |
//! | `http_request`   | [`http::request`]   | `parse_upgrade` and `parse_request`, same bytes    |
//! | `proxy_header`   | [`proxy::header`]   | `proxy::parse`, whole and every prefix             |
//! | `broker_session` | [`session::run`]    | `Broker` calls from a few connections, virtual time |
//!
//! The layout of each target's input is documented on its function; `seeds` writes the
//! hand-made inputs of `seeds/` (`cargo run --example write_seeds`).

pub mod http;
pub mod mqtt;
pub mod proxy;
pub mod seeds;
pub mod session;
pub mod ws;
