//! Where a setting is written in an HCL config file, so that an error can
//! name the line (`agent.hcl:2: server: ...`) as well as the key. The HCL
//! is parsed a second time, with `hcl-edit` (which keeps byte spans), only
//! when there is an error to place or definitions to number. JSON files get
//! serde_json's own line numbers for what it reports; other errors in them
//! name the key and the definition only.

use hcl_edit::expr::{Expression, ObjectKey};
use hcl_edit::structure::{Body, Structure};
use hcl_edit::Span;

use crate::decode::normalize_key;

/// One step of a path to a value: a key, or an index in a list (or the
/// n-th of several blocks with one name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// The steps of a `serde_path_to_error` path.
pub fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Enum { variant } => Some(Step::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

/// An HCL file parsed with its spans, once, for as many lookups as needed.
pub struct HclSource<'a> {
    text: &'a str,
    body: Body,
}

impl<'a> HclSource<'a> {
    /// `None` if `text` is not HCL that parses.
    pub fn parse(text: &'a str) -> Option<Self> {
        Some(HclSource { text, body: hcl_edit::parser::parse_body(text).ok()? })
    }

    /// The 1-based line where the last key of `path` is written, if the
    /// path can be followed. Keys match as Consul matches them (any case,
    /// `_` and `-` ignored).
    pub fn line(&self, path: &[Step]) -> Option<usize> {
        find_in_body(&self.body, path).map(|offset| line_at(self.text, offset))
    }

    /// The lines of every definition named `one` (blocks or an attribute,
    /// `service { }`) then `many` (a list, `services = [...]`), in the order
    /// the config file's reader lists them.
    pub fn definition_lines(&self, one: &str, many: &str) -> Vec<usize> {
        let mut offsets = Vec::new();
        for structure in self.body.iter() {
            match structure {
                Structure::Block(block) if block.ident.as_str() == one => offsets.extend(block.span().map(|s| s.start)),
                Structure::Attribute(attribute) if attribute.key.as_str() == one => match &attribute.value {
                    Expression::Array(items) => {
                        offsets.extend(items.iter().filter_map(|item| Some(item.span()?.start)))
                    }
                    value => offsets.extend(value.span().map(|s| s.start)),
                },
                _ => {}
            }
        }
        for attribute in self.body.attributes().filter(|a| a.key.as_str() == many) {
            if let Expression::Array(items) = &attribute.value {
                offsets.extend(items.iter().filter_map(|item| Some(item.span()?.start)));
            }
        }
        offsets.into_iter().map(|offset| line_at(self.text, offset)).collect()
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

fn same_key(written: &str, wanted: &str) -> bool {
    normalize_key(written) == normalize_key(wanted)
}

/// The offset of the last key of `path`, starting in `body`.
fn find_in_body(body: &Body, path: &[Step]) -> Option<usize> {
    let (Step::Key(key), rest) = path.split_first()? else { return None };
    let blocks: Vec<_> = body.blocks().filter(|b| same_key(b.ident.as_str(), key)).collect();
    if !blocks.is_empty() {
        let (block, rest) = match rest.split_first() {
            Some((Step::Index(i), rest)) if blocks.len() > 1 => (*blocks.get(*i)?, rest),
            _ => (blocks[0], rest),
        };
        let here = block.ident.span()?.start;
        return Some(match rest {
            [] => here,
            // A key of the block's object, or the n-th of one repeated block.
            [Step::Index(_), more @ ..] => find_in_body(&block.body, more).unwrap_or(here),
            more => find_in_body(&block.body, more).unwrap_or(here),
        });
    }
    let attribute = body.attributes().find(|a| same_key(a.key.as_str(), key))?;
    let here = attribute.key.span()?.start;
    Some(find_in_expression(&attribute.value, rest).unwrap_or(here))
}

/// The offset of the last key of `path`, starting in `expression`; `None`
/// when `path` is empty (the caller's key is the place).
fn find_in_expression(expression: &Expression, path: &[Step]) -> Option<usize> {
    let (step, rest) = path.split_first()?;
    match (step, expression) {
        (Step::Index(i), Expression::Array(items)) => {
            let item = items.get(*i)?;
            find_in_expression(item, rest).or_else(|| Some(item.span()?.start))
        }
        (Step::Key(key), Expression::Object(object)) => {
            let (found, value) = object.iter().find(|(k, _)| match k {
                ObjectKey::Ident(ident) => same_key(ident.as_str(), key),
                ObjectKey::Expression(Expression::String(text)) => same_key(text.value(), key),
                ObjectKey::Expression(_) => false,
            })?;
            let here = found.span()?.start;
            Some(find_in_expression(value.expr(), rest).unwrap_or(here))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Step {
        Step::Key(k.into())
    }

    const TEXT: &str = "datacenter = \"dc1\"\nserver = yes\nports {\n  http = 8500\n}\nservice {\n  name = \"a\"\n}\n\
                        service {\n  name = \"b\"\n  connect = {\n    sidecar_service = {}\n  }\n}\n\
                        services = [\n  { name = \"c\" },\n]\nretry_join = [\"x\", \"y\"]\n";

    #[test]
    fn keys_are_found_at_every_depth() {
        let source = HclSource::parse(TEXT).unwrap();
        assert_eq!(source.line(&[key("server")]), Some(2));
        assert_eq!(source.line(&[key("ports"), key("http")]), Some(4));
        assert_eq!(source.line(&[key("service"), Step::Index(1), key("connect"), key("SidecarService")]), Some(12));
        assert_eq!(source.line(&[key("retry_join"), Step::Index(1)]), Some(18));
        assert_eq!(source.line(&[key("nowhere")]), None);
    }

    #[test]
    fn definitions_are_numbered_in_reading_order() {
        assert_eq!(HclSource::parse(TEXT).unwrap().definition_lines("service", "services"), vec![6, 9, 16]);
        let one = HclSource::parse("service = { name = \"a\" }\n").unwrap();
        assert_eq!(one.definition_lines("service", "services"), vec![1]);
        assert!(
            HclSource::parse("{\"service\": {}}").is_none_or(|s| s.definition_lines("service", "services").is_empty())
        );
    }
}
