//! Consul's filter expressions: the `?filter=` query parameter of listing endpoints.
//!
//! A filter such as `Service.Tags contains "v2" and Service.Meta.version == "2"`
//! is parsed once per request with [`Filter::parse`] and then run over every item
//! the endpoint would return. Consul evaluates filters over its Go structs; Weft
//! evaluates them over the JSON of each item, whose PascalCase keys are the
//! selectors users already write, so one evaluator serves every endpoint.
//!
//! ```
//! use serde_json::json;
//! use weft_filter::Filter;
//!
//! let filter = Filter::parse(r#"Service.Tags contains "v2" and Service.Port == 80"#)?;
//! let mut items = vec![
//!     json!({"Node": "n1", "Service": {"Tags": ["v1"], "Port": 80}}),
//!     json!({"Node": "n2", "Service": {"Tags": ["v2"], "Port": 80}}),
//! ];
//! filter.retain(&mut items);
//! assert_eq!(items, [json!({"Node": "n2", "Service": {"Tags": ["v2"], "Port": 80}})]);
//! # Ok::<(), weft_filter::FilterError>(())
//! ```
//!
//! The crate is a small pipeline: `lexer` splits the text into tokens, `parser`
//! builds the tree defined in `ast`, and `eval` runs that tree over JSON.
#![forbid(unsafe_code)]

mod ast;
mod error;
mod eval;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;

use serde_json::Value;

pub use crate::error::FilterError;

/// A parsed filter expression, ready to be evaluated over any number of items.
#[derive(Debug, Clone)]
pub struct Filter {
    expr: ast::Expr,
}

impl Filter {
    /// Parses an expression; errors say what was expected and at which byte offset.
    ///
    /// Regular expressions are compiled here, so a bad pattern is a parse error.
    /// An empty expression is an error too: callers treat an absent or empty
    /// `?filter=` as "no filter" rather than parsing it.
    pub fn parse(expression: &str) -> Result<Filter, FilterError> {
        parser::parse(expression).map(|expr| Filter { expr })
    }

    /// Whether one item (a JSON object) matches.
    pub fn matches(&self, item: &Value) -> bool {
        self.expr.eval(item)
    }

    /// Keeps the matching elements of a JSON array, in order.
    pub fn retain(&self, items: &mut Vec<Value>) {
        items.retain(|item| self.matches(item));
    }
}
