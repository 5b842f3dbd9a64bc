//! `/v1/events`: the outbox seen and steered by an operator. Events are
//! listed by state and sink (keyset pages by id), a dead one (or every
//! dead one) is made due again, and `/v1/events/sinks` sums each sink up
//! for the dashboard: pending, dead, the last error.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::router::Routes;
use super::AppState;
use crate::clock::now_ms;
use crate::db::models::{Event, EventState};
use crate::db::queries::events;
use crate::error::{ApiError, ErrorBody};
use crate::schedule::rfc3339;

pub(crate) fn routes(routes: &mut Routes) {
    routes.resource("/v1/events").get(list);
    routes.resource("/v1/events/sinks").get(sinks);
    routes.resource("/v1/events/redeliver").post(redeliver_all);
    routes.resource("/v1/events/{id}/redeliver").post(redeliver);
}

/// One event for one sink.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventView {
    pub id: i64,
    /// The `webhook-id` header it is sent with (the same on every try).
    pub webhook_id: String,
    pub sink: String,
    /// `deletion.completed`, `deletion.failed` or `deletion.cancelled`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The video id.
    pub subject: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    /// Tries since it was written or last redelivered.
    pub tries: i32,
    pub occurred_at: String,
    /// When a pending event is tried next (or its lease ends).
    pub not_before: Option<String>,
    pub delivered_at: Option<String>,
    /// The last answer's HTTP status, when there was one.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// The webhook body's `data`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        let pending = e.state == EventState::Pending.as_str();
        EventView {
            webhook_id: crate::notify::message_id(e.id),
            id: e.id,
            sink: e.sink,
            kind: e.kind,
            subject: e.subject,
            tries: e.tries,
            occurred_at: rfc3339(e.occurred_at),
            not_before: pending.then(|| rfc3339(e.not_before)),
            delivered_at: e.delivered_at.map(rfc3339),
            last_status: e.last_status,
            last_error: e.last_error,
            data: serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null),
            state: e.state,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventQuery {
    /// `pending`, `delivered` or `dead`; every state when absent.
    pub state: Option<String>,
    /// One sink's events.
    pub sink: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<i64>,
    pub limit: Option<usize>,
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventPage {
    pub items: Vec<EventView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<i64>,
}

/// A sink's name is at most 64 characters (as `webhooks[].name` and
/// `purge[].name` are): a longer one is a malformed request.
fn check_sink(sink: Option<&str>) -> Result<(), ApiError> {
    match sink {
        Some(sink) if sink.chars().count() > 64 => {
            Err(ApiError::BadRequest("sink: at most 64 characters".into()))
        }
        _ => Ok(()),
    }
}

fn parse_state(state: Option<&str>) -> Result<Option<EventState>, ApiError> {
    state
        .map(|s| {
            EventState::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "state must be pending, delivered or dead, not {s:?}"
                ))
            })
        })
        .transpose()
}

/// `GET /v1/events?state=&sink=&after=&limit=`: keyset pagination by id.
#[utoipa::path(get, path = "/v1/events", tag = "v1", params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    state: web::Data<AppState>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let filter = parse_state(query.state.as_deref())?;
    check_sink(query.sink.as_deref())?;
    let limit = query.limit.unwrap_or(super::deletions::DEFAULT_LIMIT);
    if !(1..=super::deletions::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {}",
            super::deletions::MAX_LIMIT
        )));
    }
    let (sink, after) = (query.sink, query.after);
    let items = state
        .db
        .read_async(move |c| events::list(c, filter, sink.as_deref(), after, limit))
        .await?;
    let next = (items.len() == limit).then(|| items[items.len() - 1].id);
    Ok(HttpResponse::Ok().json(EventPage {
        items: items.into_iter().map(EventView::from).collect(),
        next,
    }))
}

/// One sink's outbox.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SinkView {
    pub sink: String,
    /// Events waiting for delivery (or for their next try).
    pub pending: i64,
    /// Events whose retries ran out.
    pub dead: i64,
    /// The last error of an event not yet delivered.
    pub last_error: Option<String>,
}

/// `GET /v1/events/sinks`: every configured sink's outbox (the events of
/// a sink removed from the configuration stay listed by `/v1/events`).
#[utoipa::path(get, path = "/v1/events/sinks", tag = "v1",
    responses((status = 200, body = Vec<SinkView>)))]
pub(crate) async fn sinks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let sinks = state.sinks.clone();
    let summary = state
        .db
        .read_async(move |c| events::summary(c, &sinks))
        .await?;
    let views: Vec<SinkView> = summary
        .into_iter()
        .map(|s| SinkView {
            sink: s.sink,
            pending: s.pending,
            dead: s.dead,
            last_error: s.last_error,
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// `POST /v1/events/{id}/redeliver`: due now, its tries counted from 0 (an
/// event being delivered right now is left to that delivery).
#[utoipa::path(post, path = "/v1/events/{id}/redeliver", tag = "v1",
    params(("id" = i64, Path, description = "the event's id")),
    responses((status = 200, body = EventView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn redeliver(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("event id must be an integer, not {id:?}")))?;
    let event = state
        .db
        .write_async(move |c| events::redeliver(c, id, now_ms()))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event {id}")))?;
    log::info!("event {id} ({}) redelivered through the API", event.sink);
    Ok(HttpResponse::Ok().json(EventView::from(event)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RedeliverQuery {
    /// `dead`: the only state redelivered in bulk.
    pub state: String,
    /// Only this sink's dead events.
    pub sink: Option<String>,
}

/// How many events were made due again.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Redelivered {
    pub count: usize,
}

/// `POST /v1/events/redeliver?state=dead[&sink=]`: every dead event due
/// now.
#[utoipa::path(post, path = "/v1/events/redeliver", tag = "v1", params(RedeliverQuery),
    responses((status = 200, body = Redelivered), (status = 400, body = ErrorBody)))]
pub(crate) async fn redeliver_all(
    state: web::Data<AppState>,
    query: web::Query<RedeliverQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    check_sink(query.sink.as_deref())?;
    if query.state != EventState::Dead.as_str() {
        return Err(ApiError::BadRequest(format!(
            "state must be dead, not {:?}",
            query.state
        )));
    }
    let sink = query.sink;
    let count = state
        .db
        .write_async(move |c| events::redeliver_dead(c, sink.as_deref(), now_ms()))
        .await?;
    log::info!("{count} dead events redelivered through the API");
    Ok(HttpResponse::Ok().json(Redelivered { count }))
}
