//! The one shape of a Consul read: parse the read options, make this server
//! fresh enough, block until the data behind the answer changes past
//! `?index`, render Consul's JSON, keep what `?filter=` selects and add the
//! `X-Consul-*` headers.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use weft_filter::Filter;
use weft_server::store::{Table, Tables};

use super::error::ApiError;
use super::query::{meta_headers, parse_filter, QueryParams, ReadOptions};
use super::AppState;

/// Serves a blocking read over `tables`: `read` picks the data (it is re-run
/// whenever one of `tables` changes), `render` turns it into the JSON body.
/// `?filter=` keeps the matching items of a list answer; on any other
/// answer it is a 400, never silently ignored (endpoints whose filter
/// applies to something else use [`blocking_json_filtered`]).
pub async fn blocking_json<T>(
    state: &AppState,
    raw_query: Option<&str>,
    tables: &[Table],
    read: impl Fn(&Tables, &QueryParams) -> T,
    render: impl FnOnce(T) -> Value,
) -> Result<Response, ApiError> {
    let render = |value: T, filter: Option<&Filter>| match (render(value), filter) {
        (Value::Array(mut items), Some(filter)) => {
            filter.retain(&mut items);
            Ok(Value::Array(items))
        }
        (body, None) => Ok(body),
        (Value::Null, Some(_)) => Ok(Value::Null),
        (_, Some(_)) => Err(ApiError::BadRequest("?filter is not supported on this endpoint".into())),
    };
    blocking_json_filtered(state, raw_query, tables, read, render).await
}

/// Like [`blocking_json`], for an answer whose `?filter=` applies to
/// something other than its own list items (Consul filters the service
/// instances behind `/v1/catalog/services`, and the service map of
/// `/v1/catalog/node/<node>`): `render` gets the parsed filter, if any.
pub async fn blocking_json_filtered<T>(
    state: &AppState,
    raw_query: Option<&str>,
    tables: &[Table],
    read: impl Fn(&Tables, &QueryParams) -> T,
    render: impl FnOnce(T, Option<&Filter>) -> Result<Value, ApiError>,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(raw_query);
    // A bad filter is a 400 before any waiting.
    let filter = parse_filter(&query)?;
    let options = ReadOptions::from_query(&query, &state.backend)?;
    options.barrier(&state.backend).await?;
    let result = state
        .backend
        .store()
        .blocking_read(tables, options.min_index, options.wait, |t| (read(t, &query), t.max_index(tables)))
        .await;
    let body = render(result.value, filter.as_ref())?;
    Ok((meta_headers(&state.backend, result.index), Json(body)).into_response())
}
