//! From a request to its answer: which endpoint, whether the token allows it, and the
//! response, every error a JSON object `{"error": "..."}` with its HTTP status.
//!
//! | endpoint | token |
//! |---|---|
//! | `GET /healthz`, `GET /readyz` | never |
//! | `GET /metrics` | unless `admin_metrics_public` |
//! | `/api/v1/...` | always; 403 while `admin_token_file` is not set |

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::request::Request;
use super::{Admin, publish, queries};
use crate::admin::shards::Question;

/// An HTTP response, written whole with `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers (`Allow`, `WWW-Authenticate`).
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &Value) -> Response {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &json!({ "error": message }))
    }

    fn with_header(mut self, name: &'static str, value: &'static str) -> Response {
        self.headers.push((name, value));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The endpoint a path names, with the methods it takes.
enum Endpoint<'a> {
    Health,
    Ready,
    Metrics,
    Clients,
    Client(&'a str),
    Subscriptions,
    Stats,
    Publish,
}

impl Endpoint<'_> {
    fn of(segments: &[String]) -> Option<Endpoint<'_>> {
        let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
        Some(match parts.as_slice() {
            ["healthz"] => Endpoint::Health,
            ["readyz"] => Endpoint::Ready,
            ["metrics"] => Endpoint::Metrics,
            ["api", "v1", "clients"] => Endpoint::Clients,
            ["api", "v1", "clients", _] => Endpoint::Client(&segments[3]),
            ["api", "v1", "subscriptions"] => Endpoint::Subscriptions,
            ["api", "v1", "stats"] => Endpoint::Stats,
            ["api", "v1", "publish"] => Endpoint::Publish,
            _ => return None,
        })
    }

    /// The `Allow` header of the endpoint.
    fn allowed(&self) -> &'static str {
        match self {
            Endpoint::Client(_) => "GET, DELETE",
            Endpoint::Publish => "POST",
            _ => "GET",
        }
    }

    fn needs_token(&self, admin: &Admin) -> bool {
        match self {
            Endpoint::Health | Endpoint::Ready => false,
            Endpoint::Metrics => !admin.settings.metrics_public,
            _ => true,
        }
    }
}

/// The answer to `request`.
pub fn route(admin: &Admin, request: &mut Request) -> Response {
    let Some(endpoint) = Endpoint::of(&request.segments) else {
        return Response::error(404, "no such endpoint");
    };
    if !endpoint.allowed().split(", ").any(|m| m == request.method) {
        return Response::error(405, "method not allowed").with_header("Allow", endpoint.allowed());
    }
    if endpoint.needs_token(admin)
        && let Err(refusal) = check_token(admin, request.authorization.as_deref())
    {
        return refusal;
    }
    match (endpoint, request.method.as_str()) {
        (Endpoint::Health, _) => Response::json(200, &json!({ "status": "ok" })),
        (Endpoint::Ready, _) => ready(admin),
        (Endpoint::Metrics, _) => Response {
            status: 200,
            content_type: crate::metrics::CONTENT_TYPE,
            headers: Vec::new(),
            body: admin.metrics.render().into_bytes(),
        },
        (Endpoint::Clients, _) => queries::clients(admin, request),
        (Endpoint::Client(id), "DELETE") => queries::kick(admin, id),
        (Endpoint::Client(id), _) => queries::client(admin, id),
        (Endpoint::Subscriptions, _) => queries::subscriptions(admin, request),
        (Endpoint::Stats, _) => queries::stats(admin),
        (Endpoint::Publish, _) => publish_request(admin, &mut request.body),
    }
}

/// 403 while no token is configured (the API is never open by default), 401 without the
/// token or with another one. Compared in constant time.
fn check_token(admin: &Admin, authorization: Option<&str>) -> Result<(), Response> {
    let Some(token) = admin.token() else {
        return Err(Response::error(
            403,
            "the admin API is off: admin_token_file is not set",
        ));
    };
    let given = authorization.and_then(|value| value.strip_prefix("Bearer "));
    match given {
        Some(given) if bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        Some(_) => {
            Err(Response::error(401, "wrong bearer token")
                .with_header("WWW-Authenticate", "Bearer"))
        }
        None => Err(
            Response::error(401, "an Authorization: Bearer token is required")
                .with_header("WWW-Authenticate", "Bearer"),
        ),
    }
}

/// Ready: started, not stopping, every shard answers a question in time, and in cluster mode
/// (unless `ready_needs_nats = false`) connected to NATS. The body says the cluster's state
/// either way, and whether the retained messages of the cluster's stream are loaded.
fn ready(admin: &Admin) -> Response {
    if !admin.ready.load(std::sync::atomic::Ordering::Acquire) {
        return Response::error(503, "not ready: starting or stopping");
    }
    if let Err(why) = admin.shards.ask_all(|_| Question::Ping, admin.timeout()) {
        return queries::unanswered(why);
    }
    let mut answer = json!({ "status": "ready", "shards": admin.shards.shard_count() });
    let Some(cluster) = &admin.cluster else {
        return Response::json(200, &answer);
    };
    let connected = cluster.figures.connected.load(Ordering::Relaxed);
    answer["cluster"] = json!(if connected {
        "connected"
    } else {
        "disconnected"
    });
    // Said, not waited for: without JetStream the stream is never read, and the node still
    // serves (`docs/scale-out.md`).
    let caught_up = cluster.figures.retained_caught_up.load(Ordering::Relaxed);
    answer["retained"] = json!(if caught_up { "loaded" } else { "loading" });
    let (_, config) = admin.config.current();
    if !connected && config.cluster.ready_needs_nats {
        answer["status"] = json!("not ready: not connected to NATS");
        return Response::json(503, &answer);
    }
    Response::json(200, &answer)
}

fn publish_request(admin: &Admin, body: &mut [u8]) -> Response {
    // A stopping broker routes nothing more: say so rather than accept and drop.
    if !admin.ready.load(std::sync::atomic::Ordering::Acquire) {
        return Response::error(503, "not ready: starting or stopping");
    }
    let now = std::time::Instant::now();
    let messages = match publish::parse(body, &admin.publish_limits(), now) {
        Ok(messages) => messages,
        Err(error) => {
            let mut answer = json!({ "error": error.problem });
            if let Some(index) = error.index {
                answer["index"] = json!(index);
            }
            if let Some(field) = error.field {
                answer["field"] = json!(field);
            }
            return Response::json(400, &answer);
        }
    };
    let count = messages.len();
    // One shard for every publish of the API, so they are routed in the order they came.
    match admin
        .shards
        .ask_one(0, Question::Publish(messages), admin.timeout())
    {
        Ok(_) => Response::json(200, &json!({ "published": count })),
        Err(why) => queries::unanswered(why),
    }
}
