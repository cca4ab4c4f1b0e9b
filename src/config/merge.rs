//! Layering of TOML values: each overlay is checked against the preset's shape, so an unknown
//! key or a value of the wrong type is refused with the full key path.

use crate::error::UsageError;
use anyhow::Result;
use toml::Value;

/// Writes `patch` over `base`, checking every key and type against `schema` (a full preset).
pub fn overlay(base: &mut Value, patch: Value, schema: &Value, path: &str) -> Result<()> {
    let Value::Table(patch) = patch else {
        return Err(UsageError::new(format!("config: {} must be a table", display(path))).into());
    };
    for (key, new) in patch {
        let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let Some(expected) = schema.get(&key) else {
            return Err(UsageError::new(format!("config: unknown key {full}")).into());
        };
        let slot = base.as_table_mut().expect("schema and base share their shape");
        if expected.is_table() {
            overlay(slot.get_mut(&key).expect("base has the schema's keys"), new, expected, &full)?;
        } else {
            slot.insert(key, conform(new, expected, &full)?);
        }
    }
    Ok(())
}

/// Checks `value` against the type of `expected`, widening integers to floats where needed.
fn conform(value: Value, expected: &Value, key: &str) -> Result<Value> {
    let wrong = |v: &Value| {
        UsageError::new(format!(
            "config: {key} = {v} has the wrong type (expected {})",
            kind(expected)
        ))
    };
    Ok(match (expected, value) {
        (Value::Float(_), Value::Integer(i)) => Value::Float(i as f64),
        (Value::Array(items), Value::Array(values)) => {
            let element = items.first().expect("preset arrays are not empty");
            let values = values.into_iter().map(|v| conform(v, element, key)).collect::<Result<_>>()?;
            Value::Array(values)
        }
        (e, v) if std::mem::discriminant(e) == std::mem::discriminant(&v) => v,
        (_, v) => return Err(wrong(&v).into()),
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "true or false",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() { "the top level" } else { path }
}

/// `a.b=v` -> (`a.b`, `{a = {b = v}}`). A value that is not TOML is taken as a string, so
/// `--set explain.split=train` needs no quotes.
pub fn parse_set(set: &str) -> Result<(String, Value)> {
    let Some((key, raw)) = set.split_once('=') else {
        return Err(UsageError::new(format!("--set {set}: expected key=value")).into());
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|part| part.is_empty()) {
        return Err(UsageError::new(format!("--set {set}: empty key")).into());
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}")).ok();
    // A value whose next line sets more keys (`1\nother = 2`) is one value too many, not a
    // value to cut short or a string.
    if parsed.as_ref().is_some_and(|t| t.len() > 1) {
        return Err(UsageError::new(format!("--set {key}: the value sets other keys on its next lines")).into());
    }
    let value = parsed.and_then(|mut t| t.remove("v")).unwrap_or_else(|| Value::String(raw.trim().to_string()));
    Ok((key.to_string(), nest(key, value)))
}

/// `a.b`, v -> `{a = {b = v}}`.
fn nest(key: &str, value: Value) -> Value {
    key.rsplit('.').fold(value, |inner, part| {
        let mut table = toml::Table::new();
        table.insert(part.to_string(), inner);
        Value::Table(table)
    })
}

/// Every value of a table as (full key, the one-key patch that sets it), in file order, so
/// a check that fails on the whole file can be retried key by key to name the culprit.
pub fn leaves(value: &Value, path: &str) -> Vec<(String, Value)> {
    match value {
        Value::Table(table) => table
            .iter()
            .flat_map(|(key, v)| leaves(v, &if path.is_empty() { key.clone() } else { format!("{path}.{key}") }))
            .collect(),
        leaf => vec![(path.to_string(), nest(path, leaf.clone()))],
    }
}
