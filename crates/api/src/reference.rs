//! The configuration reference (`docs/reference.md`), generated from the same CRDs as the
//! manifests, so that it names every field with the description, type, bounds, default and
//! validation the API server applies. `crdgen` writes it; a test fails when it is stale.

use std::fmt::Write as _;

use serde_json::Value;

use crate::crds;

/// One row per field, depth first, with its dotted path (`[]` marks list items).
fn fields(path: &str, schema: &Value, required: &[&str], rows: &mut Vec<String>) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let mut names: Vec<&String> = properties.keys().collect();
    names.sort();
    for name in names {
        let field = &properties[name];
        let full = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let (shown, item) = match field["type"].as_str() {
            Some("array") => (
                format!("list of {}", type_of(&field["items"])),
                &field["items"],
            ),
            _ => (type_of(field), field),
        };
        let mut notes = Vec::new();
        if required.contains(&name.as_str()) {
            notes.push("required".to_owned());
        }
        if let Some(default) = field.get("default") {
            notes.push(format!("default `{default}`"));
        }
        for (key, label) in [
            ("minimum", "min"),
            ("maximum", "max"),
            ("maxLength", "max length"),
            ("maxItems", "max items"),
            ("minItems", "min items"),
        ] {
            if let Some(bound) = field.get(key).or_else(|| item.get(key)) {
                notes.push(format!("{label} {bound}"));
            }
        }
        if let Some(values) = item["enum"].as_array() {
            let values: Vec<String> = values
                .iter()
                .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
                .collect();
            notes.push(format!("one of {}", values.join(", ")));
        }
        for rule in field["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .chain(item["x-kubernetes-validations"].as_array())
            .flatten()
        {
            if let Some(message) = rule["message"].as_str() {
                notes.push(format!("checked: {message}"));
            }
        }
        let description = field["description"]
            .as_str()
            .or_else(|| item["description"].as_str())
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; ").replace('|', "\\|"))
        };
        rows.push(format!("| `{full}` | {shown} | {description}{notes} |"));
        let nested_required: Vec<&str> = item["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let nested = if field["type"].as_str() == Some("array") {
            format!("{full}[]")
        } else {
            full
        };
        fields(&nested, item, &nested_required, rows);
    }
}

fn type_of(schema: &Value) -> String {
    match schema["type"].as_str() {
        Some("object") if schema.get("properties").is_some() => "object".into(),
        Some("object") => "map".into(),
        Some(other) => other.into(),
        None if schema.get("x-kubernetes-int-or-string").is_some() => "integer or string".into(),
        None => "any".into(),
    }
}

/// The reference, as Markdown.
pub fn reference() -> Result<String, serde_json::Error> {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from Herald's types by `cargo run -p herald-api --bin crdgen` (a test fails \
         when this file is stale). Every field of every `herald.dev/v1alpha1` kind, with what \
         the API server checks when it is applied. Service annotations are in `docs/guide.md`, \
         chart values in `charts/herald/values.yaml` (checked by `values.schema.json`), and \
         flags in each binary's `--help` and the README.\n",
    );
    for crd in crds() {
        let crd = serde_json::to_value(&crd)?;
        let spec = &crd["spec"];
        let kind = spec["names"]["kind"].as_str().unwrap_or_default();
        let version = &spec["versions"][0];
        let schema = &version["schema"]["openAPIV3Schema"];
        let _ = write!(
            out,
            "\n## {kind}\n\n`{}/{}`, {}; `kubectl get {}`{}.\n\n{}\n",
            spec["group"].as_str().unwrap_or_default(),
            version["name"].as_str().unwrap_or_default(),
            if spec["scope"] == "Namespaced" {
                "namespaced"
            } else {
                "cluster-scoped"
            },
            spec["names"]["plural"].as_str().unwrap_or_default(),
            spec["names"]["shortNames"]
                .as_array()
                .and_then(|s| s.first())
                .and_then(Value::as_str)
                .map(|s| format!(" (or `{s}`)"))
                .unwrap_or_default(),
            schema["description"].as_str().unwrap_or_default(),
        );
        for part in ["spec", "status"] {
            let part_schema = &schema["properties"][part];
            if part_schema.is_null() {
                continue;
            }
            let required: Vec<&str> = part_schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut rows = Vec::new();
            fields(part, part_schema, &required, &mut rows);
            let _ = write!(
                out,
                "\n| field | type | meaning |\n|---|---|---|\n{}\n",
                rows.join("\n")
            );
            for rule in part_schema["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(message) = rule["message"].as_str() {
                    let _ = writeln!(out, "\nChecked on `{part}` as a whole: {message}.");
                }
            }
        }
    }
    Ok(out)
}
