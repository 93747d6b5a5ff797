//! JSON output as crictl prints it. `info` and `inspecti` print one object:
//! `"status"` (the protobuf JSON of the runtime status or the image) and
//! then every key of the response's `info` map in sorted order, each value
//! inserted as JSON when it parses and as a string otherwise. JSON is
//! printed indented by two spaces with the keys in the order they came in
//! (Go's `json.Indent`), as YAML, or through a go-template.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::template;

/// An output format of `info` and `inspecti`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Indented JSON.
    Json,
    /// YAML.
    Yaml,
    /// A go-template over the JSON.
    GoTemplate,
}

impl Format {
    /// Parses `json`, `yaml` or `go-template`; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Self::Json),
            "yaml" => Some(Self::Yaml),
            "go-template" => Some(Self::GoTemplate),
            _ => None,
        }
    }
}

/// The compact JSON object of a status and its `info` map.
pub fn status_info(status: &impl Serialize, info: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::from("{\"status\":");
    out.push_str(&serde_json::to_string(status).context("failed to encode the status")?);
    for (key, value) in info {
        out.push(',');
        out.push_str(&serde_json::to_string(key)?);
        out.push(':');
        if serde_json::from_str::<serde::de::IgnoredAny>(value).is_ok() {
            out.push_str(value.trim());
        } else {
            out.push_str(&serde_json::to_string(value)?);
        }
    }
    out.push('}');
    Ok(out)
}

/// Renders compact JSON text (valid JSON) in `format`; `template` is used
/// by [`Format::GoTemplate`]. The result is printed with a newline.
pub fn render(json: &str, format: Format, template_text: &str) -> Result<String> {
    let value: Value = serde_json::from_str(json).context("the runtime returned invalid JSON")?;
    match format {
        Format::Json => Ok(indent(json)),
        Format::Yaml => to_yaml(&value),
        Format::GoTemplate => template::execute(template_text, &value),
    }
}

/// Renders a protobuf message as crictl's `-o json` or `-o yaml` does;
/// any other format is an error naming it.
pub fn render_message(message: &impl Serialize, format: &str) -> Result<String> {
    let json = serde_json::to_string(message).context("failed to encode the response")?;
    match format {
        "json" => Ok(indent(&json)),
        "yaml" => to_yaml(&serde_json::from_str(&json)?),
        _ => bail!("unsupported output format {format:?}"),
    }
}

/// YAML text of a JSON value (without a trailing newline).
fn to_yaml(value: &Value) -> Result<String> {
    let yaml = serde_yaml::to_string(value).context("failed to encode YAML")?;
    Ok(yaml.trim_end_matches('\n').to_string())
}

/// Indents valid JSON text with two spaces per level, keeping the order of
/// keys and the text of every scalar, and keeping `{}` and `[]` on one
/// line: the output of Go's `json.Indent(dst, src, "", "  ")`.
pub fn indent(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut open_pending = false;
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        if open_pending && c != '}' && c != ']' {
            newline(&mut out, depth);
        }
        let was_pending = std::mem::take(&mut open_pending);
        match c {
            '{' | '[' => {
                out.push(c);
                depth += 1;
                open_pending = true;
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if !was_pending {
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            '"' => {
                in_string = true;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A newline and the indentation of `depth`.
fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_like_go_json_indent() {
        let src = r#"{"status":{"conditions":[{"type":"RuntimeReady","status":true}]},"b":{},"a":[], "s":"x{,}\"y"}"#;
        let expected = r#"{
  "status": {
    "conditions": [
      {
        "type": "RuntimeReady",
        "status": true
      }
    ]
  },
  "b": {},
  "a": [],
  "s": "x{,}\"y"
}"#;
        assert_eq!(indent(src), expected);
    }

    #[test]
    fn status_info_puts_status_first_then_sorted_info() {
        let mut info = BTreeMap::new();
        info.insert("golang".to_string(), "\"go1.19.8\"".to_string());
        info.insert(
            "config".to_string(),
            "{\"sandboxImage\":\"registry.k8s.io/pause:3.9\"}".to_string(),
        );
        info.insert("note".to_string(), "not json".to_string());
        let status = serde_json::json!({"conditions": []});
        let json = status_info(&status, &info).unwrap();
        assert_eq!(
            json,
            r#"{"status":{"conditions":[]},"config":{"sandboxImage":"registry.k8s.io/pause:3.9"},"golang":"go1.19.8","note":"not json"}"#
        );
        let out = render(&json, Format::GoTemplate, "{{.config.sandboxImage}}").unwrap();
        assert_eq!(out, "registry.k8s.io/pause:3.9");
        let yaml = render(&json, Format::Yaml, "").unwrap();
        assert!(
            yaml.contains("sandboxImage: registry.k8s.io/pause:3.9"),
            "{yaml}"
        );
    }

    #[test]
    fn renders_messages_as_json_or_yaml_only() {
        let value = serde_json::json!({"items": []});
        assert_eq!(
            render_message(&value, "json").unwrap(),
            "{\n  \"items\": []\n}"
        );
        assert_eq!(render_message(&value, "yaml").unwrap(), "items: []");
        assert!(render_message(&value, "xml").is_err());
    }
}
