//! The parsed form of a filter expression.
//!
//! Everything that can be decided once per expression is decided here, at parse
//! time: regular expressions are compiled and each literal is read as a number and
//! as a boolean up front, so evaluating an item only walks the tree.

use regex::Regex;

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Match(Match),
    Not(Box<Expr>),
    /// Two or more operands; `a and b and c` is one node, so long chains do not nest.
    And(Vec<Expr>),
    /// Two or more operands, as for `And`.
    Or(Vec<Expr>),
}

/// One match expression, e.g. `Service.Tags contains "v2"`.
#[derive(Debug, Clone)]
pub(crate) struct Match {
    /// The keys (or array indexes) leading from the item to the selected value.
    pub(crate) path: Vec<String>,
    pub(crate) test: Test,
    /// Set for `!=`, `not in`, `not contains`, `not matches` and `is not empty`,
    /// each of which is exactly the negation of its positive form.
    pub(crate) negated: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Test {
    /// `==`
    Equal(Literal),
    /// `contains`, and `in` with its operands swapped.
    Contains(Literal),
    /// `is empty`
    Empty,
    /// `matches`
    Matches(Regex),
}

/// A value written in the expression.
///
/// As in Consul, a literal has no type of its own: `80`, `"80"` and `` `80` `` are
/// the same literal, and it is compared as a number, a boolean or a string
/// depending on the JSON value it meets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Literal {
    pub(crate) text: String,
    pub(crate) number: Option<Number>,
    pub(crate) boolean: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    /// Wide enough for every integer JSON holds, whether `i64` or `u64`.
    Int(i128),
    Float(f64),
}

impl Literal {
    pub(crate) fn new(text: String) -> Literal {
        let number = match text.parse::<i128>() {
            Ok(int) => Some(Number::Int(int)),
            Err(_) => text.parse::<f64>().ok().filter(|f| f.is_finite()).map(Number::Float),
        };
        let boolean = match text.as_str() {
            // The spellings Go's `strconv.ParseBool` accepts, which Consul uses.
            "true" | "True" | "TRUE" | "t" | "T" | "1" => Some(true),
            "false" | "False" | "FALSE" | "f" | "F" | "0" => Some(false),
            _ => None,
        };
        Literal { text, number, boolean }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_read_as_numbers_and_booleans_up_front() {
        let lit = |s: &str| Literal::new(s.to_owned());
        assert_eq!(lit("80").number, Some(Number::Int(80)));
        assert_eq!(lit("-3").number, Some(Number::Int(-3)));
        assert_eq!(lit("18446744073709551615").number, Some(Number::Int(u64::MAX.into())));
        assert_eq!(lit("1.5").number, Some(Number::Float(1.5)));
        assert_eq!(lit("v1").number, None);
        assert_eq!(lit("inf").number, None);
        assert_eq!(lit("NaN").number, None);
        assert_eq!(lit("true").boolean, Some(true));
        assert_eq!(lit("F").boolean, Some(false));
        assert_eq!(lit("yes").boolean, None);
        assert_eq!(lit("1").boolean, Some(true));
    }
}
