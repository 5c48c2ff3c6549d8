//! The crate's one error type.
//!
//! Filters come from users, typed into a query string, so an error must say what
//! went wrong and where: every variant carries the byte offset into the expression
//! at which parsing gave up, and its message can be returned to the user as is.

/// Why a filter expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The expression does not follow the grammar, e.g.
    /// `filter: expected a value after "==" at offset 14`.
    #[error("filter: {message} at offset {offset}")]
    Syntax {
        /// What was expected, and what was found instead.
        message: String,
        /// Byte offset into the expression.
        offset: usize,
    },
    /// The pattern given to `matches` is not a valid regular expression.
    #[error("filter: invalid regular expression at offset {offset}: {reason}")]
    Regex {
        /// What the regular expression compiler objected to.
        reason: String,
        /// Byte offset of the pattern in the expression.
        offset: usize,
    },
}

impl FilterError {
    pub(crate) fn syntax(message: impl Into<String>, offset: usize) -> FilterError {
        FilterError::Syntax { message: message.into(), offset }
    }
}
