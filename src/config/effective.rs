//! The effective configuration as TOML, for `fanfare check-config`: every key with the value
//! the broker would run with, defaults included, so an operator sees what a file changes.
//!
//! A key with no value (an optional file, a listener turned off where that is spelled `off`)
//! is written as a comment, since TOML has no null.

use std::fmt::Write;

use serde::Serialize;

use super::{AuthSettings, ClusterSettings, Config, TlsSettings};

/// `config` as a TOML document that `Config::from_toml` reads back to the same values.
pub fn effective_toml(config: &Config) -> String {
    let mut out = Toml::default();
    top_level(&mut out, config);
    out.table("limits");
    if let Ok(toml::Value::Table(limits)) = toml::Value::try_from(&config.limits) {
        for (key, value) in limits {
            out.line(&key, &value);
        }
    }
    tls(&mut out, &config.tls);
    auth(&mut out, &config.auth);
    cluster(&mut out, &config.cluster);
    for bridge in &config.bridges {
        out.text.push_str("\n[[bridge]]\n");
        if let Ok(toml::Value::Table(keys)) = toml::Value::try_from(bridge) {
            for (key, value) in keys {
                out.line(&key, &value);
            }
        }
    }
    for policy in &config.policies {
        out.text.push_str("\n[[policy]]\n");
        out.value("filter", &policy.filter);
        out.value("on_full", &policy.on_full);
    }
    for sni in &config.tls.sni {
        out.text.push_str("\n[[tls.sni]]\n");
        out.value("server_name", &sni.server_name);
        out.value("cert_file", &sni.cert_file);
        out.value("key_file", &sni.key_file);
    }
    out.text
}

fn top_level(out: &mut Toml, config: &Config) {
    let listener = |addr: Option<std::net::SocketAddr>| {
        addr.map_or_else(|| "off".to_owned(), |addr| addr.to_string())
    };
    out.value("tcp", &listener(config.tcp));
    out.value("ws", &listener(config.ws));
    out.value("mqtts", &listener(config.mqtts));
    out.value("wss", &listener(config.wss));
    out.value("ws_path", &config.ws_path);
    out.value("ws_allow_no_subprotocol", &config.ws_allow_no_subprotocol);
    out.value("ws_allowed_origins", &config.ws_allowed_origins);
    let proxy = config.proxy_protocol;
    out.value("tcp_proxy_protocol", &proxy.tcp);
    out.value("ws_proxy_protocol", &proxy.ws);
    out.value("mqtts_proxy_protocol", &proxy.mqtts);
    out.value("wss_proxy_protocol", &proxy.wss);
    out.value("trusted_proxies", &config.trusted_proxies.entries());
    out.value("shards", &config.shards);
    out.value("log_level", &config.log_level);
    out.value("log_format", &config.log_format);
    out.value("recv_buffers_per_shard", &config.recv_buffers_per_shard);
    out.value("recv_buffer_bytes", &config.recv_buffer_bytes);
    out.value("tcp_notsent_lowat_bytes", &config.tcp_notsent_lowat_bytes);
    out.value("tcp_slow_consumer", &config.tcp_slow_consumer);
    out.value("ws_slow_consumer", &config.ws_slow_consumer);
    out.value("http_builtin", &config.http_builtin);
    out.optional("http_dir", config.http_dir.as_ref());
    out.value("http_metrics", &config.http_metrics);
    let admin = &config.admin;
    out.value("admin", &listener(admin.listen));
    out.optional("admin_token_file", admin.token_file.as_ref());
    out.value("admin_metrics_public", &admin.metrics_public);
    out.value("admin_body_bytes_max", &admin.body_bytes_max);
    out.value("admin_head_bytes_max", &admin.head_bytes_max);
    out.value("admin_connections_max", &admin.connections_max);
    out.value("admin_timeout_ms", &admin.timeout_ms);
    out.value("admin_page_len_max", &admin.page_len_max);
    out.value("response_topic_prefix", &config.response_topic_prefix);
    out.value("sys_interval_s", &config.sys_interval_s);
    out.value("drain_s", &config.drain_s);
    let persistence = &config.persistence;
    out.optional("data_dir", persistence.data_dir.as_ref());
    out.value("durability", &persistence.durability);
    out.value(
        "durability_interval_ms",
        &persistence.durability_interval_ms,
    );
    let store = &persistence.store;
    out.value(
        "store_queue_flushes_per_shard_max",
        &store.queue_flushes_per_shard_max,
    );
    out.value("store_flushes_per_write_max", &store.flushes_per_write_max);
    out.value("compaction_log_ratio", &store.compaction_log_ratio);
    out.value("compaction_log_bytes_min", &store.compaction_log_bytes_min);
    out.value("store_retry_interval_ms", &store.retry_interval_ms);
}

fn tls(out: &mut Toml, tls: &TlsSettings) {
    out.table("tls");
    out.optional("cert_file", tls.cert_file.as_ref());
    out.optional("key_file", tls.key_file.as_ref());
    out.optional("client_ca_file", tls.client_ca_file.as_ref());
    out.value("client_auth", &tls.client_auth);
    out.value("identity_as_username", &tls.identity_as_username);
    out.value("versions", &tls.versions);
    out.value("ktls", &tls.ktls);
}

fn auth(out: &mut Toml, auth: &AuthSettings) {
    out.table("auth");
    out.optional("allow_anonymous", auth.allow_anonymous.as_ref());
    out.optional("password_file", auth.password_file.as_ref());
    out.optional("acl_file", auth.acl_file.as_ref());
    out.optional("jwt_secret_file", auth.jwt_secret_file.as_ref());
    out.value("jwt_public_key_files", &auth.jwt_public_key_files);
    out.optional("jwks_file", auth.jwks_file.as_ref());
    out.value("jwt_user_claim", &auth.jwt_user_claim);
    out.optional("jwt_acl_claim", auth.jwt_acl_claim.as_ref());
    out.optional("jwt_issuer", auth.jwt_issuer.as_ref());
    out.optional("jwt_audience", auth.jwt_audience.as_ref());
    out.value("jwt_leeway_s", &auth.jwt_leeway_s);
    out.value("jwt_token_bytes_max", &auth.jwt_token_bytes_max);
    out.value("verifier_threads", &auth.verifier_threads);
    out.value("verify_queue_max", &auth.verify_queue_max);
    out.value("verified_cache_ttl_s", &auth.verified_cache_ttl_s);
    out.value(
        "verified_cache_entries_max",
        &auth.verified_cache_entries_max,
    );
}

fn cluster(out: &mut Toml, cluster: &ClusterSettings) {
    out.table("cluster");
    out.value("nats", &cluster.nats);
    out.value("node", &cluster.node);
    out.value("subject_prefix", &cluster.subject_prefix);
    out.optional("user", cluster.user.as_ref());
    out.optional("password_file", cluster.password_file.as_ref());
    out.optional("token_file", cluster.token_file.as_ref());
    out.optional("tls_ca_file", cluster.tls_ca_file.as_ref());
    out.value("out_queue_bytes_max", &cluster.out_queue_bytes_max);
    out.value("in_queue_bytes_max", &cluster.in_queue_bytes_max);
    out.value("ready_needs_nats", &cluster.ready_needs_nats);
    out.value(
        "takeover_ids_waiting_max",
        &cluster.takeover_ids_waiting_max,
    );
    out.value(
        "takeover_ids_remembered_max",
        &cluster.takeover_ids_remembered_max,
    );
    out.value("takeover_remembered_s", &cluster.takeover_remembered_s);
    out.value("retained_stream", &cluster.retained_stream);
    out.optional("retained_replicas", cluster.retained_replicas.as_ref());
    out.value("sessions_bucket", &cluster.sessions_bucket);
    out.value(
        "sessions_bucket_bytes_max",
        &cluster.sessions_bucket_bytes_max,
    );
    out.value(
        "session_sync_interval_ms",
        &cluster.session_sync_interval_ms,
    );
    out.value(
        "session_fetch_timeout_ms",
        &cluster.session_fetch_timeout_ms,
    );
    out.value("session_stop_write_ms", &cluster.session_stop_write_ms);
    out.value("sessions_waiting_max", &cluster.sessions_waiting_max);
    out.value(
        "session_replay_margin_ms",
        &cluster.session_replay_margin_ms,
    );
    out.value("session_sent_ids_max", &cluster.session_sent_ids_max);
    out.value(
        "retained_stream_bytes_max",
        &cluster.retained_stream_bytes_max,
    );
    out.value(
        "retained_unsent_bytes_max",
        &cluster.retained_unsent_bytes_max,
    );
    out.value("qos_stream", &cluster.qos_stream);
    out.value("qos_stream_bytes_max", &cluster.qos_stream_bytes_max);
    out.value("qos_stream_age_max_s", &cluster.qos_stream_age_max_s);
    out.value("qos_acks_waiting_max", &cluster.qos_acks_waiting_max);
    out.value("qos_ack_pending_max", &cluster.qos_ack_pending_max);
    out.value("qos_redeliver_after_ms", &cluster.qos_redeliver_after_ms);
    out.value(
        "qos_delivered_remembered_max",
        &cluster.qos_delivered_remembered_max,
    );
}

/// The document being written, one `key = value` line at a time.
#[derive(Default)]
struct Toml {
    text: String,
}

impl Toml {
    fn table(&mut self, name: &str) {
        let _ = write!(self.text, "\n[{name}]\n");
    }

    fn line(&mut self, key: &str, value: &toml::Value) {
        let _ = writeln!(self.text, "{key} = {value}");
    }

    fn value<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        match toml::Value::try_from(value) {
            Ok(value) => self.line(key, &value),
            // Every value written here is a number, a boolean, a string, a path or a list of
            // them, which TOML holds; a path that is not UTF-8 is the one exception.
            Err(e) => {
                let _ = writeln!(self.text, "# {key}: {e}");
            }
        }
    }

    fn optional<T: Serialize>(&mut self, key: &str, value: Option<&T>) {
        match value {
            Some(value) => self.value(key, value),
            None => {
                let _ = writeln!(self.text, "# {key} is not set");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is written reads back as the same configuration: it names every key rightly.
    #[test]
    fn effective_toml_reads_back_the_same() {
        let text = "tcp = \"127.0.0.1:1999\"\nws = \"off\"\nlog_level = \"debug\"\n\
                    trusted_proxies = [\"10.0.0.0/8\"]\n\
                    [limits]\ninflight_max = 7\n[tls]\ncert_file = \"c.pem\"\n\
                    [auth]\nallow_anonymous = false\n\
                    [[policy]]\nfilter = \"score/#\"\non_full = \"conflate\"\n\
                    [[bridge]]\nname = \"up\"\nurl = \"mqtt://127.0.0.1:1883\"\n\
                    protocol = \"5\"\nusername = \"u\"\npassword_file = \"p\"\n\
                    topics = [{ filter = \"a/#\", direction = \"both\", qos = 1, \
                    local_prefix = \"x/\" }]\n";
        let config = Config::from_toml(text, "test").expect("a valid file");
        let written = effective_toml(&config);
        let again = Config::from_toml(&written, "written").expect("reads back");
        assert_eq!(again, config);
        assert!(written.contains("inflight_max = 7\n"), "{written}");
        assert!(written.contains("# key_file is not set\n"), "{written}");
    }
}
