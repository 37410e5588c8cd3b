//! The read and kick endpoints of `/api/v1`: each asks the shards that hold the answer
//! (`shards.rs`) and writes what they said as JSON.
//!
//! Listings are paged by client identifier (keyset paging): `limit` (at most
//! `admin_page_len_max`) and `cursor`, the `next_cursor` of the previous page. A cursor stays
//! valid while clients come and go, which an offset would not: each page starts after the last
//! identifier seen.

use serde_json::{Value, json};

use super::Admin;
use super::routes::Response;
use super::shards::{AddressFilter, Answer, Located, Question, Unanswered};
use crate::broker::Broker;
use crate::broker::admin::{ClientFilter, ClientRow, Kick, SubscriptionRow};
use crate::conn::Transport;
use crate::protocol::mqtt::ProtocolVersion;
use crate::protocol::mqtt::topic::validate_topic_name;

/// Entries of a page when the request names no `limit`.
const PAGE_LEN_DEFAULT: usize = 100;

/// 503: the shards are busy, or did not answer in time.
pub fn unanswered(why: Unanswered) -> Response {
    match why {
        Unanswered::Busy => Response::error(503, "the shards' admin queues are full; try again"),
        Unanswered::Timeout => Response::error(503, "the shards did not answer in time"),
    }
}

/// `?limit=`: the page length asked for, lowered to `admin_page_len_max`.
fn page_len(admin: &Admin, value: Option<&str>) -> Result<usize, Response> {
    let most = admin.settings.page_len_max as usize;
    match value {
        None => Ok(PAGE_LEN_DEFAULT.min(most)),
        Some(text) => match text.parse::<usize>() {
            Ok(len) if len > 0 => Ok(len.min(most)),
            _ => Err(Response::error(400, "`limit` must be a positive number")),
        },
    }
}

/// `GET /api/v1/clients?limit=&cursor=&prefix=&user=&address=`
pub fn clients(admin: &Admin, request: &super::request::Request) -> Response {
    let limit = match page_len(admin, request.param("limit")) {
        Ok(limit) => limit,
        Err(refusal) => return refusal,
    };
    let address = match request.param("address").map(AddressFilter::parse) {
        Some(None) => {
            return Response::error(
                400,
                "`address` must be an IP address, with or without a port",
            );
        }
        Some(filter) => filter,
        None => None,
    };
    let filter = ClientFilter {
        prefix: request.param("prefix").map(Into::into),
        user: request.param("user").map(Into::into),
        after: request.param("cursor").map(Into::into),
    };
    let question = |_| Question::Clients {
        filter: filter.clone(),
        address,
        limit,
    };
    let answers = match admin.shards.ask_all(question, admin.timeout()) {
        Ok(answers) => answers,
        Err(why) => return unanswered(why),
    };
    let mut full = false;
    let mut rows = Vec::new();
    for answer in answers {
        if let Answer::Clients(page) = answer {
            full |= page.len() == limit;
            rows.extend(page);
        }
    }
    rows.sort_by(|a, b| a.item.client_id.cmp(&b.item.client_id));
    let more = full || rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|last| last.item.client_id.to_string());
    let clients: Vec<Value> = rows.iter().map(client_json).collect();
    Response::json(
        200,
        &json!({ "clients": clients, "next_cursor": next_cursor }),
    )
}

fn client_json(located: &Located<ClientRow>) -> Value {
    let row = &located.item;
    json!({
        "client_id": row.client_id,
        "connected": row.conn.is_some(),
        "protocol": match row.version {
            ProtocolVersion::V31 => "3.1",
            ProtocolVersion::V311 => "3.1.1",
            ProtocolVersion::V5 => "5",
        },
        "transport": row.transport.map(|transport| match transport {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }),
        "address": located.address.map(|addr| addr.to_string()),
        "user": row.user,
        "subscriptions": row.subscriptions,
    })
}

fn subscription_json(row: &SubscriptionRow) -> Value {
    json!({
        "filter": row.filter,
        "qos": row.qos as u8,
        "no_local": row.no_local,
        "retain_as_published": row.retain_as_published,
        "subscription_id": (row.subscription_id != 0).then_some(row.subscription_id),
    })
}

/// The shard that owns the session of `client_id`.
fn owner(admin: &Admin, client_id: &str) -> usize {
    Broker::owner_shard(client_id, admin.shards.shard_count())
}

/// `GET /api/v1/clients/{id}`
pub fn client(admin: &Admin, client_id: &str) -> Response {
    let question = Question::Client(client_id.into());
    let detail = match admin
        .shards
        .ask_one(owner(admin, client_id), question, admin.timeout())
    {
        Ok(Answer::Client(Some(detail))) => detail,
        Ok(_) => return Response::error(404, "no such client"),
        Err(why) => return unanswered(why),
    };
    let row = Located {
        item: detail.item.row.clone(),
        address: detail.address,
    };
    let mut answer = client_json(&row);
    let detail = &detail.item;
    answer["session_expiry_s"] = json!(detail.session_expiry_s);
    answer["subscriptions"] = detail.subscriptions.iter().map(subscription_json).collect();
    answer["inflight"] = json!(detail.inflight);
    answer["queued_messages"] = json!(detail.queued_messages);
    answer["queued_bytes"] = json!(detail.queued_bytes);
    Response::json(200, &answer)
}

/// `DELETE /api/v1/clients/{id}`: ends its connection; an MQTT 5 client gets DISCONNECT 0x98
/// (Administrative action), a 3.1.x one sees its connection closed.
pub fn kick(admin: &Admin, client_id: &str) -> Response {
    let question = Question::Kick(client_id.into());
    match admin
        .shards
        .ask_one(owner(admin, client_id), question, admin.timeout())
    {
        Ok(Answer::Kick(Kick::Closed(_))) => Response::json(200, &json!({ "kicked": client_id })),
        Ok(Answer::Kick(Kick::Offline)) => {
            Response::error(409, "the client's session is offline: no connection to end")
        }
        Ok(_) => Response::error(404, "no such client"),
        Err(why) => unanswered(why),
    }
}

/// `GET /api/v1/subscriptions?topic=T&limit=`: who would receive a message published to T.
pub fn subscriptions(admin: &Admin, request: &super::request::Request) -> Response {
    let Some(topic) = request.param("topic") else {
        return Response::error(400, "`topic` is required");
    };
    if let Err(e) = validate_topic_name(topic, &admin.publish_limits().decode) {
        return Response::error(400, &format!("`topic` is not a valid topic name: {e}"));
    }
    let limit = match page_len(admin, request.param("limit")) {
        Ok(limit) => limit,
        Err(refusal) => return refusal,
    };
    let question = |_| Question::Subscribers {
        topic: topic.into(),
        limit,
    };
    let answers = match admin.shards.ask_all(question, admin.timeout()) {
        Ok(answers) => answers,
        Err(why) => return unanswered(why),
    };
    let (mut subscribers, mut groups, mut truncated) = (Vec::new(), Vec::new(), false);
    for answer in answers {
        if let Answer::Subscribers {
            subscribers: found,
            truncated: cut,
            groups: owned,
        } = answer
        {
            truncated |= cut;
            subscribers.extend(found);
            groups.extend(owned);
        }
    }
    subscribers.sort_by(|a, b| a.item.client_id.cmp(&b.item.client_id));
    truncated |= subscribers.len() > limit;
    subscribers.truncate(limit);
    let subscribers: Vec<Value> = subscribers
        .iter()
        .map(|located| {
            let mut entry = subscription_json(&located.item.subscription);
            entry["client_id"] = json!(located.item.client_id);
            entry["address"] = json!(located.address.map(|addr| addr.to_string()));
            entry
        })
        .collect();
    let groups: Vec<Value> = groups
        .iter()
        .map(|(group, members)| json!({ "group": group, "members": members }))
        .collect();
    Response::json(
        200,
        &json!({
            "topic": topic,
            "subscribers": subscribers,
            "shared_groups": groups,
            "truncated": truncated,
        }),
    )
}

/// `GET /api/v1/stats`: every metric summed over the shards, as the `$SYS` topics are.
pub fn stats(admin: &Admin) -> Response {
    let totals = admin.metrics.totals();
    let figures: serde_json::Map<String, Value> = totals
        .named()
        .map(|(name, value)| (name.to_owned(), json!(value)))
        .collect();
    Response::json(
        200,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": admin.started.elapsed().as_secs(),
            "shards": admin.shards.shard_count(),
            "totals": figures,
        }),
    )
}
