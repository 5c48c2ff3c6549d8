//! Consul's built-in templated policies (`builtin/service`, `builtin/node`,
//! `builtin/dns`): rules written once, with a name filled in. They are
//! read and previewed through the API (`/v1/acl/templated-policies`,
//! `/v1/acl/templated-policy/preview/<name>`); a token gets the same rules
//! from a service or node identity.
//!
//! A name is checked before it is put into a template (letters, digits,
//! `-`, `_`, and `.` for nodes), so a variable can never add a rule of its
//! own; the rendered text is then parsed like any policy.

use weft_api::acl::Rules;

use crate::parse::parse_rules;

/// One built-in template.
#[derive(Debug)]
pub struct Template {
    pub name: &'static str,
    /// A JSON schema of its variables; empty when it takes none.
    pub schema: &'static str,
    /// The rules, with `{{.Name}}` where the name goes.
    pub template: &'static str,
    pub description: &'static str,
    kind: NameKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    None,
    Service,
    Node,
}

/// The variables schema of the templates that take a name (Consul's).
const NAME_SCHEMA: &str = r##"{
  "type": "object",
  "properties": {
    "name": { "type": "string", "$ref": "#/definitions/min-length-one" }
  },
  "required": ["name"],
  "definitions": {
    "min-length-one": { "type": "string", "minLength": 1 }
  }
}"##;

/// Every built-in template, by name.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "builtin/service",
        schema: NAME_SCHEMA,
        template: r#"
service "{{.Name}}" {
	policy = "write"
}
service "{{.Name}}-sidecar-proxy" {
	policy = "write"
}
service_prefix "" {
	policy = "read"
}
node_prefix "" {
	policy = "read"
}"#,
        description: "Gives the token or role permissions to register a service and discover services in the \
                      Consul catalog. It also gives the specified service's sidecar proxy the permission to \
                      discover and route traffic to other services.",
        kind: NameKind::Service,
    },
    Template {
        name: "builtin/node",
        schema: NAME_SCHEMA,
        template: r#"
node "{{.Name}}" {
	policy = "write"
}
service_prefix "" {
	policy = "read"
}"#,
        description: "Gives the token or role permissions for a register an agent/node into the catalog. A node \
                      is typically a consul agent but can also be a physical server, cloud instance or a \
                      container.",
        kind: NameKind::Node,
    },
    Template {
        name: "builtin/dns",
        schema: "",
        template: r#"
node_prefix "" {
	policy = "read"
}
service_prefix "" {
	policy = "read"
}
query_prefix "" {
	policy = "read"
}"#,
        description: "Gives the token or role permissions for the Consul DNS to query services in the network.",
        kind: NameKind::None,
    },
];

/// Why a template could not be rendered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("Invalid templated policy Name: {0}")]
    Unknown(String),
    #[error("validation error for templated policy: {template:?}: name is required")]
    NameRequired { template: &'static str },
    #[error("validation error for templated policy: {template:?}: invalid name {name:?}: only letters, digits, '-' and '_' are allowed")]
    InvalidName { template: &'static str, name: String },
}

/// The template called `name`.
pub fn find(name: &str) -> Result<&'static Template, TemplateError> {
    TEMPLATES.iter().find(|t| t.name == name).ok_or_else(|| TemplateError::Unknown(name.to_owned()))
}

impl Template {
    /// The rules' text with `name` filled in, and the rules it parses to.
    pub fn render(&self, name: &str) -> Result<(String, Rules), TemplateError> {
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (c == '.' && self.kind == NameKind::Node);
        if self.kind != NameKind::None {
            if name.is_empty() {
                return Err(TemplateError::NameRequired { template: self.name });
            }
            if !name.chars().all(allowed) {
                return Err(TemplateError::InvalidName { template: self.name, name: name.to_owned() });
            }
        }
        let text = self.template.replace("{{.Name}}", name);
        let rules = parse_rules(&text).expect("a built-in template with a checked name always parses");
        Ok((text, rules))
    }
}

#[cfg(test)]
mod tests {
    use weft_api::acl::{Access, NamedResource};

    use super::*;
    use crate::Authorizer;

    #[test]
    fn every_template_renders_to_rules_that_parse() {
        for template in TEMPLATES {
            let (text, _) = template.render("web").unwrap();
            assert!(!text.contains("{{"), "{}: {text}", template.name);
        }
    }

    #[test]
    fn the_service_template_grants_what_a_service_identity_does() {
        let (_, rules) = find("builtin/service").unwrap().render("web").unwrap();
        let authorizer = Authorizer::new(Access::Deny, [&rules]);
        assert!(authorizer.named(NamedResource::Service, "web").grants(Access::Write));
        assert!(authorizer.named(NamedResource::Service, "web-sidecar-proxy").grants(Access::Write));
        assert!(!authorizer.named(NamedResource::Service, "payments").grants(Access::Write));
        assert!(authorizer.named(NamedResource::Node, "any").grants(Access::Read));
    }

    #[test]
    fn names_cannot_add_rules_and_unknown_templates_are_named() {
        let service = find("builtin/service").unwrap();
        assert_eq!(service.render(""), Err(TemplateError::NameRequired { template: "builtin/service" }));
        let injected = "x\" { policy = \"write\" }\nkey_prefix \"";
        assert!(matches!(service.render(injected), Err(TemplateError::InvalidName { .. })));
        assert!(matches!(service.render("a.b"), Err(TemplateError::InvalidName { .. })));
        assert!(find("builtin/node").unwrap().render("vm-1.example").is_ok());
        assert!(find("builtin/dns").unwrap().render("").is_ok());
        assert_eq!(find("builtin/nope").unwrap_err().to_string(), "Invalid templated policy Name: builtin/nope");
    }
}
