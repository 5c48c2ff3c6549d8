//! How commands print: aligned tables for people, JSON for scripts.

use clap::ValueEnum;

/// `--format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Prints rows as columns separated by two spaces, padded to the widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// A list answer: as JSON, or one table row per item of `items`.
pub fn print_list(
    format: Format,
    body: &serde_json::Value,
    items: &serde_json::Value,
    header: &[&str],
    row: impl Fn(&serde_json::Value) -> Vec<String>,
) {
    match format {
        Format::Json => print_json(body),
        Format::Table => {
            let rows: Vec<Vec<String>> = items.as_array().into_iter().flatten().map(row).collect();
            print_table(header, &rows);
        }
    }
}

/// A string field of a JSON answer, empty if absent.
pub fn text(value: &serde_json::Value, field: &str) -> String {
    value[field].as_str().unwrap_or_default().to_owned()
}
