//! `-o go-template`: the part of Go's text/template that crictl users and
//! kubeadm need — literal text and `{{.a.b.c}}` field paths into the JSON
//! output. A missing key is an error (crictl sets `missingkey=error`);
//! values print as Go's `fmt` prints decoded JSON (`map[k:v]`, `[a b]`).
//! Any other action (pipelines, functions, `range`, `if`...) is refused
//! with an error that says what is supported.

use anyhow::{bail, Result};
use serde_json::Value;

/// Executes `template` over `data`.
pub fn execute(template: &str, data: &Value) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("failed to generate go-template: unclosed action in {template:?}");
        };
        let path = parse_action(&after[..end])?;
        out.push_str(&format_top(lookup(data, &path)?));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses an action's text into its field path (`.` is the empty path).
pub fn parse_action(action: &str) -> Result<Vec<&str>> {
    let trimmed = action.trim();
    let unsupported = || {
        anyhow::anyhow!(
            "unsupported go-template action {{{{{action}}}}}: this crictl supports only \
             field paths such as {{{{.config.sandboxImage}}}}"
        )
    };
    let Some(fields) = trimmed.strip_prefix('.') else {
        return Err(unsupported());
    };
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    let path: Vec<&str> = fields.split('.').collect();
    if path.iter().all(|f| is_identifier(f)) {
        Ok(path)
    } else {
        Err(unsupported())
    }
}

/// Whether `field` is a Go identifier.
fn is_identifier(field: &str) -> bool {
    let mut chars = field.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// Follows `path` through maps, as `{{.a.b}}` does.
pub fn lookup<'a>(data: &'a Value, path: &[&str]) -> Result<&'a Value> {
    let mut value = data;
    for (i, field) in path.iter().enumerate() {
        let at = format!(".{}", path[..=i].join("."));
        value = match value {
            Value::Object(map) => match map.get(*field) {
                Some(next) => next,
                None => {
                    bail!("failed to template data: at <{at}>: map has no entry for key {field:?}")
                }
            },
            Value::Null => {
                bail!("failed to template data: at <{at}>: nil pointer evaluating .{field}")
            }
            other => bail!(
                "failed to template data: at <{at}>: can't evaluate field {field} in a JSON {}",
                kind(other)
            ),
        };
    }
    Ok(value)
}

/// The kind of a JSON value, for errors.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Prints an action's value: a JSON null prints as `<no value>`.
fn format_top(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".to_string(),
        other => format_value(other),
    }
}

/// Prints a value as Go's `fmt` prints JSON decoded into `interface{}`
/// (numbers keep their JSON text: crictl decodes with `UseNumber`).
pub fn format_value(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(format_value).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let entries: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", format_value(v)))
                .collect();
            format!("map[{}]", entries.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info() -> Value {
        json!({
            "status": {"conditions": [{"type": "RuntimeReady", "status": true}]},
            "config": {"sandboxImage": "registry.k8s.io/pause:3.9", "maxConcurrentDownloads": 3,
                       "cni": {"binDir": "/opt/cni/bin"}, "nothing": null},
            "golang": "go1.19.8"
        })
    }

    #[test]
    fn looks_up_field_paths() {
        let data = info();
        assert_eq!(
            execute("{{.config.sandboxImage}}", &data).unwrap(),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(
            execute("{{ .config.cni.binDir }}", &data).unwrap(),
            "/opt/cni/bin"
        );
        assert_eq!(
            execute("{{.config.maxConcurrentDownloads}}", &data).unwrap(),
            "3"
        );
        assert_eq!(execute("go={{.golang}}!", &data).unwrap(), "go=go1.19.8!");
        assert_eq!(execute("{{.config.nothing}}", &data).unwrap(), "<no value>");
        assert_eq!(execute("plain", &data).unwrap(), "plain");
    }

    #[test]
    fn prints_composite_values_like_go_fmt() {
        let data = info();
        assert_eq!(
            execute("{{.status.conditions}}", &data).unwrap(),
            "[map[status:true type:RuntimeReady]]"
        );
        assert_eq!(
            execute("{{.config.cni}}", &data).unwrap(),
            "map[binDir:/opt/cni/bin]"
        );
    }

    #[test]
    fn missing_keys_and_non_maps_are_errors() {
        let data = info();
        let err = execute("{{.config.sandboxImages}}", &data)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("map has no entry for key \"sandboxImages\""),
            "{err}"
        );
        let err = execute("{{.golang.version}}", &data)
            .unwrap_err()
            .to_string();
        assert!(err.contains("can't evaluate field version"), "{err}");
        assert!(execute("{{.config.nothing.deeper}}", &data).is_err());
    }

    #[test]
    fn refuses_anything_but_field_paths() {
        let data = info();
        for template in [
            "{{json .config}}",
            "{{range .status.conditions}}x{{end}}",
            "{{.config | printf \"%s\"}}",
            "{{- .golang -}}",
            "{{.config.}}",
            "{{.config",
        ] {
            assert!(
                execute(template, &data).is_err(),
                "{template} should be refused"
            );
        }
        let err = execute("{{json .config}}", &data).unwrap_err().to_string();
        assert!(err.contains("supports only field paths"), "{err}");
    }
}
