//! The one shape of a Consul read: parse the read options, make this server
//! fresh enough, block until the data behind the answer changes past
//! `?index`, render Consul's JSON and add the `X-Consul-*` headers.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use weft_server::store::{Table, Tables};

use super::error::ApiError;
use super::query::{meta_headers, QueryParams, ReadOptions};
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
    let options = ReadOptions::from_query(&query, &state.server)?;
    options.barrier(&state.server).await?;
    let result = state
        .server
        .store()
        .blocking_read(tables, options.min_index, options.wait, |t| (read(t, &query), t.max_index(tables)))
        .await;
    Ok((meta_headers(&state.server, result.index), Json(render(result.value))).into_response())
}
