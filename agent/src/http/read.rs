//! The one shape of a Consul read: parse the read options, make this server
//! fresh enough, block until the data behind the answer changes past
//! `?index`, render Consul's JSON, keep what `?filter=` selects (list
//! answers) and add the `X-Consul-*` headers.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use weft_server::store::{Table, Tables};

use super::error::ApiError;
use super::query::{meta_headers, parse_filter, QueryParams, ReadOptions};
use super::AppState;

/// Serves a blocking read over `tables`: `read` picks the data (it is re-run
/// whenever one of `tables` changes), `render` turns it into the JSON body.
pub async fn blocking_json<T>(
    state: &AppState,
    raw_query: Option<&str>,
    tables: &[Table],
    read: impl Fn(&Tables, &QueryParams) -> T,
    render: impl FnOnce(T) -> Value,
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
    let body = match render(result.value) {
        Value::Array(mut items) => {
            if let Some(filter) = filter {
                filter.retain(&mut items);
            }
            Value::Array(items)
        }
        other => other,
    };
    Ok((meta_headers(&state.backend, result.index), Json(body)).into_response())
}
