//! Splits a filter expression into tokens.
//!
//! The lexer only knows punctuation, the two comparison operators and quoted
//! strings. Everything else (selectors, keywords, unquoted values) is a *word*: a
//! maximal run of characters that are neither whitespace nor punctuation. What a
//! word means depends on where it stands (`80` after `==` is a value, `Tags.0`
//! before it is a selector), so that is the parser's business.

use crate::error::FilterError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    LParen,
    RParen,
    LBracket,
    RBracket,
    /// `==`
    EqEq,
    /// `!=`
    NotEq,
    /// A double-quoted or backtick string, holding its decoded contents.
    Str(String),
    /// Anything else: a selector, a keyword or an unquoted value.
    Word,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub(crate) kind: TokenKind,
    /// The token as written, quotes and escapes included.
    pub(crate) text: &'a str,
    /// Byte offset of the token in the expression.
    pub(crate) offset: usize,
}

impl TokenKind {
    pub(crate) fn is_str(&self) -> bool {
        matches!(self, TokenKind::Str(_))
    }
}

impl Token<'_> {
    /// Byte offset just past the token.
    pub(crate) fn end(&self) -> usize {
        self.offset + self.text.len()
    }

    pub(crate) fn is_word(&self, word: &str) -> bool {
        self.kind == TokenKind::Word && self.text == word
    }
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token<'_>>, FilterError> {
    let mut lexer = Lexer { src, pos: 0 };
    let mut tokens = Vec::new();
    while let Some(token) = lexer.next_token()? {
        tokens.push(token);
    }
    Ok(tokens)
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '[' | ']' | '"' | '`' | '=' | '!')
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.bump();
        }
    }

    fn next_token(&mut self) -> Result<Option<Token<'a>>, FilterError> {
        self.eat_while(char::is_whitespace);
        let start = self.pos;
        let Some(c) = self.bump() else { return Ok(None) };
        let kind = match c {
            '(' => TokenKind::LParen,
            ')' => TokenKind::RParen,
            '[' => TokenKind::LBracket,
            ']' => TokenKind::RBracket,
            '=' | '!' => {
                if self.peek() != Some('=') {
                    let message = format!("unexpected \"{c}\", the comparison operators are \"==\" and \"!=\"");
                    return Err(FilterError::syntax(message, start));
                }
                self.bump();
                if c == '=' {
                    TokenKind::EqEq
                } else {
                    TokenKind::NotEq
                }
            }
            '"' => TokenKind::Str(self.quoted(start)?),
            '`' => TokenKind::Str(self.raw(start)?),
            _ => {
                self.eat_while(is_word_char);
                TokenKind::Word
            }
        };
        Ok(Some(Token { kind, text: &self.src[start..self.pos], offset: start }))
    }

    /// The rest of a double-quoted string, whose opening quote is at `start`.
    /// Escapes are Go's (`strconv.Unquote`), as in Consul.
    fn quoted(&mut self, start: usize) -> Result<String, FilterError> {
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(unterminated(start)),
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.escape(start, at)?),
                Some(c) => out.push(c),
            }
        }
    }

    /// The rest of a backtick string: no escapes, as in Go.
    fn raw(&mut self, start: usize) -> Result<String, FilterError> {
        let body = self.pos;
        self.eat_while(|c| c != '`');
        let text = self.src[body..self.pos].to_owned();
        match self.bump() {
            Some(_) => Ok(text),
            None => Err(unterminated(start)),
        }
    }

    /// One escape sequence; its backslash, at `at`, has been consumed.
    fn escape(&mut self, start: usize, at: usize) -> Result<char, FilterError> {
        let Some(c) = self.bump() else { return Err(unterminated(start)) };
        let decoded = match c {
            '"' => '"',
            '\'' => '\'',
            '\\' => '\\',
            'a' => '\u{07}',
            'b' => '\u{08}',
            'f' => '\u{0C}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{0B}',
            'x' => self.hex_escape(c, 2, at)?,
            'u' => self.hex_escape(c, 4, at)?,
            'U' => self.hex_escape(c, 8, at)?,
            _ => {
                let hint = "regular expressions are easier in `backticks`, where \\ is literal";
                let message = format!("invalid escape \"\\{c}\" in a string ({hint})");
                return Err(FilterError::syntax(message, at));
            }
        };
        Ok(decoded)
    }

    fn hex_escape(&mut self, letter: char, digits: usize, at: usize) -> Result<char, FilterError> {
        let body = self.pos;
        for _ in 0..digits {
            if !self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                let message = format!("expected {digits} hex digits after \"\\{letter}\"");
                return Err(FilterError::syntax(message, at));
            }
            self.bump();
        }
        u32::from_str_radix(&self.src[body..self.pos], 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| FilterError::syntax("escape is not a valid Unicode character", at))
    }
}

fn unterminated(start: usize) -> FilterError {
    FilterError::syntax("unterminated string", start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src).unwrap().into_iter().map(|t| t.kind).collect()
    }

    fn string(src: &str) -> String {
        match kinds(src).as_slice() {
            [TokenKind::Str(s)] => s.clone(),
            other => panic!("{src}: expected one string, got {other:?}"),
        }
    }

    fn error(src: &str) -> String {
        tokenize(src).unwrap_err().to_string()
    }

    #[test]
    fn punctuation_operators_and_words() {
        use TokenKind::*;
        assert_eq!(
            kinds(r#"(a.b==1)!=[ "x" ] not"#),
            [LParen, Word, EqEq, Word, RParen, NotEq, LBracket, Str("x".into()), RBracket, Word]
        );
        let tokens = tokenize("  Service.Meta.version  ==  v1.2 ").unwrap();
        let texts: Vec<_> = tokens.iter().map(|t| (t.text, t.offset)).collect();
        assert_eq!(texts, [("Service.Meta.version", 2), ("==", 24), ("v1.2", 28)]);
    }

    #[test]
    fn empty_and_blank_input_have_no_tokens() {
        assert!(kinds("").is_empty());
        assert!(kinds(" \t\r\n ").is_empty());
    }

    #[test]
    fn double_quoted_escapes() {
        assert_eq!(string(r#""plain""#), "plain");
        assert_eq!(string(r#""a\"b\\c""#), "a\"b\\c");
        assert_eq!(string(r#""\n\t\r\a\b\f\v\'""#), "\n\t\r\u{7}\u{8}\u{c}\u{b}'");
        assert_eq!(string(r#""\x41\u00e9\U0001F600""#), "Aé😀");
        assert_eq!(string(r#""ünï""#), "ünï");
        assert_eq!(string(r#""""#), "");
    }

    #[test]
    fn backtick_strings_are_raw() {
        assert_eq!(string(r"`^v\d+\.`"), r"^v\d+\.");
        assert_eq!(string(r#"`say "hi"`"#), r#"say "hi""#);
    }

    #[test]
    fn errors_point_at_the_problem() {
        assert_eq!(error(r#"Name == "abc"#), "filter: unterminated string at offset 8");
        assert_eq!(error("Name == `abc"), "filter: unterminated string at offset 8");
        assert_eq!(error(r#"Name == "abc\"#), "filter: unterminated string at offset 8");
        assert_eq!(
            error(r#"Name matches "\d""#),
            "filter: invalid escape \"\\d\" in a string (regular expressions are easier in `backticks`, \
             where \\ is literal) at offset 14"
        );
        assert_eq!(error(r#""\u12""#), "filter: expected 4 hex digits after \"\\u\" at offset 1");
        assert_eq!(error(r#""\uD800""#), "filter: escape is not a valid Unicode character at offset 1");
        assert_eq!(
            error("Port = 80"),
            "filter: unexpected \"=\", the comparison operators are \"==\" and \"!=\" at offset 5"
        );
        assert_eq!(
            error("!Port"),
            "filter: unexpected \"!\", the comparison operators are \"==\" and \"!=\" at offset 0"
        );
    }
}
