//! Readable tables for the CLI: columns padded to their widest cell.

use serde_json::Value;

/// A cell's text: strings bare, null as `-`, anything else as JSON.
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Renders `rows` (objects) under `columns` (header, field).
pub(crate) fn render(columns: &[(&str, &str)], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|(_, field)| cell(&row[*field]))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (header, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(columns.iter().map(|(h, _)| h.to_string()).collect());
    for row in cells {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_are_aligned() {
        let rows = [json!({"a": "x", "b": 1}), json!({"a": "longer", "b": null})];
        assert_eq!(
            render(&[("A", "a"), ("B", "b")], &rows),
            "A       B\nx       1\nlonger  -"
        );
    }
}
