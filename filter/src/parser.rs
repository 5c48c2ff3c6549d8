//! Turns tokens into an [`Expr`].
//!
//! A hand-written recursive-descent parser for Consul's grammar:
//!
//! ```text
//! expr     = and { "or" and }
//! and      = unary { "and" unary }
//! unary    = "not" unary | "(" expr ")" | match
//! match    = selector ( ("==" | "!=") value
//!                     | ["not"] ("contains" | "matches") value
//!                     | "is" ["not"] "empty" )
//!          | value ["not"] "in" selector
//! selector = field { "." field } { ["."] "[" string "]" [ "." field { "." field } ] }
//! value    = string | word
//! ```
//!
//! Consul's parser is generated from a PEG grammar and reports little more than
//! "no match found". Writing it by hand lets every error say what was expected,
//! after what, at which offset. Nesting is capped so that hostile input cannot
//! overflow the stack.

use regex::{Regex, RegexBuilder};

use crate::ast::{Expr, Literal, Match, Test};
use crate::error::FilterError;
use crate::lexer::{self, Token, TokenKind};

/// How deep parentheses and `not`s may nest; far beyond any hand-written filter.
const MAX_DEPTH: usize = 64;

/// Compiled-size cap for `matches` patterns, so one request cannot claim much memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const KEYWORDS: [&str; 8] = ["and", "or", "not", "in", "is", "empty", "contains", "matches"];

pub(crate) fn parse(src: &str) -> Result<Expr, FilterError> {
    let tokens = lexer::tokenize(src)?;
    if tokens.is_empty() {
        return Err(FilterError::syntax("the expression is empty", 0));
    }
    let mut parser = Parser { src, tokens: &tokens, pos: 0, depth: 0 };
    let expr = parser.or_expr()?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) if token.kind == TokenKind::RParen => Err(FilterError::syntax("unmatched \")\"", token.offset)),
        Some(_) => Err(parser.expected("\"and\", \"or\" or the end of the expression")),
    }
}

struct Parser<'a> {
    src: &'a str,
    tokens: &'a [Token<'a>],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn or_expr(&mut self) -> Result<Expr, FilterError> {
        let first = self.and_expr()?;
        if !self.at_word("or") {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.eat_word("or").is_some() {
            operands.push(self.and_expr()?);
        }
        Ok(Expr::Or(operands))
    }

    fn and_expr(&mut self) -> Result<Expr, FilterError> {
        let first = self.unary()?;
        if !self.at_word("and") {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.eat_word("and").is_some() {
            operands.push(self.unary()?);
        }
        Ok(Expr::And(operands))
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if let Some(not) = self.eat_word("not") {
            let operand = self.nested(not, Self::unary)?;
            return Ok(Expr::Not(Box::new(operand)));
        }
        if let Some(open) = self.eat(TokenKind::LParen) {
            let expr = self.nested(open, Self::or_expr)?;
            if self.eat(TokenKind::RParen).is_none() {
                return Err(match self.peek() {
                    None => FilterError::syntax("unclosed \"(\"", open.offset),
                    Some(_) => self.expected("\"and\", \"or\" or \")\""),
                });
            }
            return Ok(expr);
        }
        self.match_expr()
    }

    fn nested(
        &mut self,
        opener: &Token<'_>,
        parse: impl FnOnce(&mut Self) -> Result<Expr, FilterError>,
    ) -> Result<Expr, FilterError> {
        if self.depth == MAX_DEPTH {
            let message = format!("expression nests deeper than {MAX_DEPTH} levels");
            return Err(FilterError::syntax(message, opener.offset));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn match_expr(&mut self) -> Result<Expr, FilterError> {
        match self.peek() {
            Some(token) if token.kind.is_str() => self.value_in_selector(),
            Some(token) if is_plain_word(token) => {
                if self.value_comes_first() {
                    self.value_in_selector()
                } else {
                    self.selector_match()
                }
            }
            _ => Err(self.expected(format!("an expression{}", self.after_prev()))),
        }
    }

    /// Whether the word at hand is followed by `in` or `not in`.
    fn value_comes_first(&self) -> bool {
        let next = |n: usize| self.tokens.get(self.pos + n);
        next(1).is_some_and(|t| t.is_word("in"))
            || (next(1).is_some_and(|t| t.is_word("not")) && next(2).is_some_and(|t| t.is_word("in")))
    }

    /// `<value> in <selector>` and `<value> not in <selector>`.
    fn value_in_selector(&mut self) -> Result<Expr, FilterError> {
        let Some(value) = self.bump() else { return Err(self.expected("a value")) };
        let literal = literal(value);
        let negated = self.eat_word("not").is_some();
        let Some(keyword) = self.eat_word("in") else {
            let after = if negated { "\"not\"".to_owned() } else { describe(value) };
            return Err(self.expected(format!("\"in\" or \"not in\" after {after}")));
        };
        let path = self.selector_after(keyword)?;
        Ok(Expr::Match(Match { path, test: Test::Contains(literal), negated }))
    }

    /// The forms that start with a selector.
    fn selector_match(&mut self) -> Result<Expr, FilterError> {
        let Some(first) = self.bump() else { return Err(self.expected("a selector")) };
        let path = self.selector(first)?;
        let selector = &self.src[first.offset..self.prev_end()];
        let Some(op) = self.peek().filter(|t| is_operator(t)) else {
            let what = format!("an operator such as \"==\" or \"contains\" after selector {selector}");
            return Err(self.expected(what));
        };
        self.pos += 1;
        let (test, negated) = match op.kind {
            TokenKind::EqEq => (Test::Equal(self.literal_after(op)?), false),
            TokenKind::NotEq => (Test::Equal(self.literal_after(op)?), true),
            _ => match op.text {
                "contains" => (Test::Contains(self.literal_after(op)?), false),
                "matches" => (Test::Matches(self.regex_after(op)?), false),
                "is" => {
                    let negated = self.eat_word("not").is_some();
                    if self.eat_word("empty").is_none() {
                        let after = if negated { "\"is not\"" } else { "\"is\"" };
                        return Err(self.expected(format!("\"empty\" after {after}")));
                    }
                    (Test::Empty, negated)
                }
                // `is_operator` leaves only "not", which must go on to a positive form.
                _ => {
                    if let Some(next) = self.eat_word("contains") {
                        (Test::Contains(self.literal_after(next)?), true)
                    } else if let Some(next) = self.eat_word("matches") {
                        (Test::Matches(self.regex_after(next)?), true)
                    } else {
                        return Err(self.expected("\"contains\" or \"matches\" after \"not\""));
                    }
                }
            },
        };
        Ok(Expr::Match(Match { path, test, negated }))
    }

    /// The selector after `in`.
    fn selector_after(&mut self, keyword: &Token<'_>) -> Result<Vec<String>, FilterError> {
        match self.peek() {
            Some(first) if is_plain_word(first) => {
                self.pos += 1;
                self.selector(first)
            }
            _ => Err(self.expected(format!("a selector after {}", describe(keyword)))),
        }
    }

    /// The rest of a selector whose first word has been consumed: more dotted
    /// fields and `["key"]` indexes, the latter optionally after a dot.
    fn selector(&mut self, first: &'a Token<'a>) -> Result<Vec<String>, FilterError> {
        let mut path = Vec::new();
        let (mut text, mut offset) = (first.text, first.offset);
        loop {
            let dangling_dot = push_fields(&mut path, text, offset)?;
            if self.peek().is_none_or(|t| t.kind != TokenKind::LBracket) {
                if dangling_dot {
                    let message = "expected a field name or \"[\" after \".\"";
                    return Err(FilterError::syntax(message, offset + text.len()));
                }
                return Ok(path);
            }
            while self.eat(TokenKind::LBracket).is_some() {
                path.push(self.index_key()?);
            }
            // `Meta["a"].b`: the lexer sees `.b` as a word of its own.
            match self.peek() {
                Some(next) if next.kind == TokenKind::Word && next.text.starts_with('.') => {
                    self.pos += 1;
                    text = &next.text[1..];
                    offset = next.offset + 1;
                }
                _ => return Ok(path),
            }
        }
    }

    /// `"key"]`, after a `[`.
    fn index_key(&mut self) -> Result<String, FilterError> {
        let Some(TokenKind::Str(key)) = self.peek().map(|t| &t.kind) else {
            return Err(self.expected("a quoted key after \"[\""));
        };
        self.pos += 1;
        if self.eat(TokenKind::RBracket).is_none() {
            return Err(self.expected("\"]\" after the key"));
        }
        Ok(key.clone())
    }

    /// The value operand of `op`.
    fn value_after(&mut self, op: &Token<'_>) -> Result<&'a Token<'a>, FilterError> {
        match self.peek() {
            Some(value) if value.kind.is_str() || is_plain_word(value) => {
                self.pos += 1;
                Ok(value)
            }
            _ => Err(self.expected(format!("a value after {}", describe(op)))),
        }
    }

    fn literal_after(&mut self, op: &Token<'_>) -> Result<Literal, FilterError> {
        self.value_after(op).map(literal)
    }

    fn regex_after(&mut self, op: &Token<'_>) -> Result<Regex, FilterError> {
        let value = self.value_after(op)?;
        RegexBuilder::new(&literal(value).text)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|err| FilterError::Regex { reason: regex_reason(&err), offset: value.offset })
    }

    // Token plumbing.

    fn peek(&self) -> Option<&'a Token<'a>> {
        self.tokens.get(self.pos)
    }

    fn bump(&mut self) -> Option<&'a Token<'a>> {
        let token = self.peek()?;
        self.pos += 1;
        Some(token)
    }

    fn eat(&mut self, kind: TokenKind) -> Option<&'a Token<'a>> {
        let token = self.peek().filter(|t| t.kind == kind)?;
        self.pos += 1;
        Some(token)
    }

    fn at_word(&self, word: &str) -> bool {
        self.peek().is_some_and(|t| t.is_word(word))
    }

    fn eat_word(&mut self, word: &str) -> Option<&'a Token<'a>> {
        let token = self.peek().filter(|t| t.is_word(word))?;
        self.pos += 1;
        Some(token)
    }

    fn prev_end(&self) -> usize {
        self.pos.checked_sub(1).and_then(|i| self.tokens.get(i)).map_or(0, Token::end)
    }

    fn after_prev(&self) -> String {
        match self.pos.checked_sub(1).and_then(|i| self.tokens.get(i)) {
            Some(prev) => format!(" after {}", describe(prev)),
            None => String::new(),
        }
    }

    /// An error at the next token, which is not what the grammar needs.
    fn expected(&self, what: impl AsRef<str>) -> FilterError {
        let what = what.as_ref();
        match self.peek() {
            Some(found) => FilterError::syntax(format!("expected {what}, found {}", describe(found)), found.offset),
            None => FilterError::syntax(format!("expected {what}"), self.src.len()),
        }
    }
}

/// A word that can be a selector or a value: anything but a keyword.
fn is_plain_word(token: &Token<'_>) -> bool {
    token.kind == TokenKind::Word && !KEYWORDS.contains(&token.text)
}

fn is_operator(token: &Token<'_>) -> bool {
    match token.kind {
        TokenKind::EqEq | TokenKind::NotEq => true,
        TokenKind::Word => matches!(token.text, "contains" | "matches" | "is" | "not"),
        _ => false,
    }
}

fn literal(token: &Token<'_>) -> Literal {
    match &token.kind {
        TokenKind::Str(s) => Literal::new(s.clone()),
        _ => Literal::new(token.text.to_owned()),
    }
}

/// How a token is named in an error message.
fn describe(token: &Token<'_>) -> String {
    let text = token.text;
    match token.kind {
        TokenKind::Str(_) => format!("string {text}"),
        TokenKind::Word if KEYWORDS.contains(&text) => format!("keyword \"{text}\""),
        TokenKind::Word if KEYWORDS.contains(&text.to_lowercase().as_str()) => {
            format!("\"{text}\" (keywords are lowercase)")
        }
        _ => format!("\"{text}\""),
    }
}

/// Appends the dot-separated fields of one selector word to `path`, checking each.
/// Returns whether the word ends in a dot, which only an index (`Meta.["k"]`) may follow.
fn push_fields(path: &mut Vec<String>, text: &str, offset: usize) -> Result<bool, FilterError> {
    let mut at = offset;
    let mut fields = text.split('.').peekable();
    while let Some(field) = fields.next() {
        if field.is_empty() {
            if fields.peek().is_none() && !path.is_empty() {
                return Ok(true);
            }
            let message = if path.is_empty() { "expected a selector" } else { "expected a field name after \".\"" };
            return Err(FilterError::syntax(message, at));
        }
        if let Some((i, c)) = field.char_indices().find(|&(_, c)| !is_field_char(c)) {
            return Err(FilterError::syntax(format!("unexpected \"{c}\" in a selector"), at + i));
        }
        if path.is_empty() && !field.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            let message = format!("expected a selector, which starts with a letter, found \"{text}\"");
            return Err(FilterError::syntax(message, at));
        }
        path.push(field.to_owned());
        at += field.len() + 1;
    }
    Ok(false)
}

/// Characters of a selector field: Consul's identifiers allow letters, digits, `_`
/// and `/`; `-` is allowed too, for keys such as `Meta.git-sha`.
fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/')
}

/// The regex crate draws the pattern and a caret over several lines; an error that
/// ends up in an HTTP response wants the one line saying what is wrong.
fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    let reason = text.lines().rev().find_map(|line| line.strip_prefix("error: ")).unwrap_or(&text);
    reason.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree as an s-expression, to check structure and precedence.
    fn sexpr(expr: &Expr) -> String {
        let list = |op: &str, exprs: &[Expr]| {
            let inner: Vec<_> = exprs.iter().map(sexpr).collect();
            format!("({op} {})", inner.join(" "))
        };
        match expr {
            Expr::Match(m) => {
                let path = m.path.join("|");
                let not = if m.negated { "!" } else { "" };
                match &m.test {
                    Test::Equal(lit) => format!("({not}== {path} {})", lit.text),
                    Test::Contains(lit) => format!("({not}contains {path} {})", lit.text),
                    Test::Empty => format!("({not}empty {path})"),
                    Test::Matches(re) => format!("({not}matches {path} {})", re.as_str()),
                }
            }
            Expr::Not(inner) => format!("(not {})", sexpr(inner)),
            Expr::And(exprs) => list("and", exprs),
            Expr::Or(exprs) => list("or", exprs),
        }
    }

    fn tree(src: &str) -> String {
        sexpr(&parse(src).unwrap_or_else(|e| panic!("{src}: {e}")))
    }

    fn error(src: &str) -> String {
        match parse(src) {
            Ok(expr) => panic!("{src}: parsed as {}", sexpr(&expr)),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn every_operator_form() {
        assert_eq!(tree("A == 1"), "(== A 1)");
        assert_eq!(tree("A != 1"), "(!== A 1)");
        assert_eq!(tree("\"x\" in A"), "(contains A x)");
        assert_eq!(tree("x not in A"), "(!contains A x)");
        assert_eq!(tree("A contains x"), "(contains A x)");
        assert_eq!(tree("A not contains x"), "(!contains A x)");
        assert_eq!(tree("A is empty"), "(empty A)");
        assert_eq!(tree("A is not empty"), "(!empty A)");
        assert_eq!(tree("A matches `^v\\d`"), "(matches A ^v\\d)");
        assert_eq!(tree("A not matches x"), "(!matches A x)");
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        assert_eq!(tree("A == 1 or B == 2 and C == 3"), "(or (== A 1) (and (== B 2) (== C 3)))");
        assert_eq!(tree("A == 1 and B == 2 or C == 3"), "(or (and (== A 1) (== B 2)) (== C 3))");
        assert_eq!(tree("not A == 1 and B == 2"), "(and (not (== A 1)) (== B 2))");
        assert_eq!(tree("A == 1 and not B == 2 or C == 3"), "(or (and (== A 1) (not (== B 2))) (== C 3))");
        assert_eq!(tree("not not A is empty"), "(not (not (empty A)))");
    }

    #[test]
    fn chains_are_flat() {
        assert_eq!(tree("A == 1 and B == 2 and C == 3"), "(and (== A 1) (== B 2) (== C 3))");
        assert_eq!(tree("A == 1 or B == 2 or C == 3"), "(or (== A 1) (== B 2) (== C 3))");
    }

    #[test]
    fn parentheses_override_precedence() {
        assert_eq!(tree("(A == 1 or B == 2) and C == 3"), "(and (or (== A 1) (== B 2)) (== C 3))");
        assert_eq!(tree("not (A == 1 or B == 2)"), "(not (or (== A 1) (== B 2)))");
        assert_eq!(tree("((A == 1))"), "(== A 1)");
        assert_eq!(tree("(A==1)and(B==2)"), "(and (== A 1) (== B 2))");
    }

    #[test]
    fn selectors() {
        assert_eq!(tree("Service.Meta.version == 2"), "(== Service|Meta|version 2)");
        assert_eq!(tree(r#"Service.Meta["version"] == 2"#), "(== Service|Meta|version 2)");
        assert_eq!(tree(r#"Service.Meta.["version"] == 2"#), "(== Service|Meta|version 2)");
        assert_eq!(tree(r#"Service.Meta[`a.b c`] == 2"#), "(== Service|Meta|a.b c 2)");
        assert_eq!(tree(r#"A["b"]["c"].d.e == 2"#), "(== A|b|c|d|e 2)");
        assert_eq!(tree(r#"A["b"].["c"] == 2"#), "(== A|b|c 2)");
        assert_eq!(tree("Service.Tags.0 == v1"), "(== Service|Tags|0 v1)");
        assert_eq!(tree("_x.git-sha/1 is empty"), "(empty _x|git-sha/1)");
        assert_eq!(tree("v1 in Service.Meta[\"tags\"]"), "(contains Service|Meta|tags v1)");
        // As in Consul, a word before `in` is a value, even one that looks like a selector.
        assert_eq!(tree("Service.Tags in v2"), "(contains v2 Service.Tags)");
    }

    #[test]
    fn values() {
        assert_eq!(tree(r#"A == "a b""#), "(== A a b)");
        assert_eq!(tree("A == `a\\b`"), "(== A a\\b)");
        assert_eq!(tree("A == -1.5"), "(== A -1.5)");
        assert_eq!(tree("A == true"), "(== A true)");
        assert_eq!(tree("A == us-east-1"), "(== A us-east-1)");
        assert_eq!(tree("A == 10.0.0.1:8500"), "(== A 10.0.0.1:8500)");
        assert_eq!(tree(r#"A == "and""#), "(== A and)");
        assert_eq!(tree("A==1"), "(== A 1)");
    }

    #[test]
    fn error_messages_and_offsets() {
        assert_eq!(error(""), "filter: the expression is empty at offset 0");
        assert_eq!(error("   "), "filter: the expression is empty at offset 0");
        assert_eq!(error("Service.Port =="), "filter: expected a value after \"==\" at offset 15");
        assert_eq!(error("Service.Port == )"), "filter: expected a value after \"==\", found \")\" at offset 16");
        assert_eq!(
            error("Node == and Port == 1"),
            "filter: expected a value after \"==\", found keyword \"and\" at offset 8"
        );
        assert_eq!(
            error("Service.Tags v2"),
            "filter: expected an operator such as \"==\" or \"contains\" after selector Service.Tags, \
             found \"v2\" at offset 13"
        );
        assert_eq!(error("A is"), "filter: expected \"empty\" after \"is\" at offset 4");
        assert_eq!(error("A is not full"), "filter: expected \"empty\" after \"is not\", found \"full\" at offset 9");
        assert_eq!(
            error("A not x"),
            "filter: expected \"contains\" or \"matches\" after \"not\", found \"x\" at offset 6"
        );
        assert_eq!(
            error("\"v2\" Tags"),
            "filter: expected \"in\" or \"not in\" after string \"v2\", found \"Tags\" at offset 5"
        );
        assert_eq!(error("v2 not in"), "filter: expected a selector after keyword \"in\" at offset 9");
        assert_eq!(
            error("A == 1 B == 2"),
            "filter: expected \"and\", \"or\" or the end of the expression, found \"B\" at offset 7"
        );
        assert_eq!(
            error("A == 1 AND B == 2"),
            "filter: expected \"and\", \"or\" or the end of the expression, found \"AND\" (keywords are lowercase) \
             at offset 7"
        );
        assert_eq!(error("A == 1 and"), "filter: expected an expression after keyword \"and\" at offset 10");
        assert_eq!(error("not"), "filter: expected an expression after keyword \"not\" at offset 3");
        assert_eq!(error("()"), "filter: expected an expression after \"(\", found \")\" at offset 1");
        assert_eq!(error("(A == 1"), "filter: unclosed \"(\" at offset 0");
        assert_eq!(error("(A == 1 B"), "filter: expected \"and\", \"or\" or \")\", found \"B\" at offset 8");
        assert_eq!(error("A == 1)"), "filter: unmatched \")\" at offset 6");
        assert_eq!(error("and == 1"), "filter: expected an expression, found keyword \"and\" at offset 0");
    }

    #[test]
    fn selector_errors() {
        assert_eq!(
            error("1A == 1"),
            "filter: expected a selector, which starts with a letter, found \"1A\" at offset 0"
        );
        assert_eq!(error(".A == 1"), "filter: expected a selector at offset 0");
        assert_eq!(error("A..B == 1"), "filter: expected a field name after \".\" at offset 2");
        assert_eq!(error("A. == 1"), "filter: expected a field name or \"[\" after \".\" at offset 2");
        assert_eq!(error("A.b#c == 1"), "filter: unexpected \"#\" in a selector at offset 3");
        assert_eq!(error("A[b] == 1"), "filter: expected a quoted key after \"[\", found \"b\" at offset 2");
        assert_eq!(error("A[\"b\" == 1"), "filter: expected \"]\" after the key, found \"==\" at offset 6");
        assert_eq!(error("A[\"b\"]. == 1"), "filter: expected a field name or \"[\" after \".\" at offset 7");
    }

    #[test]
    fn bad_regex_is_a_parse_error() {
        assert_eq!(error("A matches `(`"), "filter: invalid regular expression at offset 10: unclosed group");
        assert!(error("A not matches \"[z-a]\"").starts_with("filter: invalid regular expression at offset 14: "));
    }

    #[test]
    fn nesting_is_capped() {
        let ok = format!("{}A == 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}A == 1{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert_eq!(error(&deep), format!("filter: expression nests deeper than 64 levels at offset {MAX_DEPTH}"));
        let nots = "not ".repeat(100_000) + "A == 1";
        assert!(error(&nots).contains("nests deeper"));
        let parens = "(".repeat(100_000);
        assert!(error(&parens).contains("nests deeper"));
    }
}
