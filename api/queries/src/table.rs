//! Report tables: the rows a report's CSV holds and its page shows, and the
//! one CSV writer.
//!
//! A report with a CSV builds one [`Table`] (`cost::table`,
//! `overview::top_table`, `statement::table`, `budgets::table`,
//! `burndown::table`); the download is [`Table::to_csv`] and the page
//! renders the same cells, so the two cannot disagree and no page parses
//! CSV back. Every amount of money in a CSV is written by [`usd`].

use std::borrow::Cow;

use rust_decimal::Decimal;
use tollgate_contract::cost::COST_SCALE;

/// An amount of USD as every CSV writes it (and every page's tooltip
/// shows it): exact, with all [`COST_SCALE`] decimals, `1.250000000000`,
/// whatever scale the value was computed or stored at (a budget limit
/// typed as `50`, a sum of costs). Per-token prices are not amounts:
/// they are written digit for digit, as stored, since they may have more
/// decimals than a cost.
pub fn usd(value: Decimal) -> String {
    let mut exact = value;
    exact.rescale(COST_SCALE);
    exact.to_string()
}

/// [`usd`], or an empty cell for an amount that does not exist.
pub fn usd_or_empty(value: Option<Decimal>) -> String {
    value.map(usd).unwrap_or_default()
}

/// A header and rows of cells. Cells are the strings a CSV reader reads
/// back from [`Table::to_csv`]: a value a spreadsheet would run as a formula
/// is already defused ([`defuse_formula`]), and pages show the cells as
/// they are, so a page and its file agree to the character.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    columns: Vec<Cow<'static, str>>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column names.
    pub fn new<C: Into<Cow<'static, str>>>(columns: impl IntoIterator<Item = C>) -> Self {
        Self {
            columns: columns.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row, one value per column, defusing each value.
    pub fn push(&mut self, values: impl IntoIterator<Item = String>) {
        self.rows
            .push(values.into_iter().map(defuse_formula).collect());
    }

    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.as_ref())
    }

    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// Take the rows, leaving the table with its header only.
    pub fn into_rows(self) -> Vec<Vec<String>> {
        self.rows
    }

    /// RFC 4180: the header line, then one line per row, each ended by
    /// `\n`; a field holding a comma, quote or line break is quoted, its
    /// quotes doubled.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        csv_line(&mut out, &mut self.columns());
        out.push_str(&self.rows_csv());
        out
    }

    /// The rows' lines of [`Table::to_csv`] without the header, for a CSV
    /// written a page at a time.
    pub fn rows_csv(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            csv_line(&mut out, &mut row.iter().map(String::as_str));
        }
        out
    }
}

fn csv_line(out: &mut String, fields: &mut dyn Iterator<Item = &str>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&quote(field));
    }
    out.push('\n');
}

/// A leading `=`, `+`, `-` or `@`, also after spaces, tabs or line
/// breaks (spreadsheets skip them: `" =cmd|' /C calc'!A0"` runs), is
/// prefixed with `'` so spreadsheet programs do not run the value as a
/// formula (tenant names are user-controlled); a negative number stays a
/// number.
pub fn defuse_formula(value: String) -> String {
    let start = value.trim_start_matches([' ', '\t', '\r', '\n']);
    if start.starts_with(['=', '+', '@'])
        || (start.starts_with('-') && value.parse::<Decimal>().is_err())
    {
        format!("'{value}")
    } else {
        value
    }
}

/// A field is quoted when it holds the separator, a quote or a line break,
/// and also `;`: a spreadsheet in a locale whose list separator is `;`
/// splits an unquoted `semi;=1+1` into a cell `=1+1`, a formula.
fn quote(field: &str) -> Cow<'_, str> {
    if field.contains([',', ';', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut t = Table::new(["name", "note"]);
        t.push(["a,b".to_string(), "say \"hi\"".to_string()]);
        t.push(["=SUM(A1)".to_string(), "-0.5".to_string()]);
        t.push(["-x".to_string(), "plain".to_string()]);
        assert_eq!(
            t.to_csv(),
            "name,note\n\"a,b\",\"say \"\"hi\"\"\"\n'=SUM(A1),-0.5\n'-x,plain\n"
        );
        // The cells are what a CSV reader reads back.
        assert_eq!(t.rows()[1], ["'=SUM(A1)", "-0.5"]);
    }

    #[test]
    fn formulas_after_whitespace_and_semicolons_are_defused() {
        let mut t = Table::new(["name"]);
        for value in [
            " =cmd|' /C calc'!A0",
            "\t+1",
            "\r\n@SUM(A1)",
            "  -x",
            "semi;=1+1",
            " plain",
        ] {
            t.push([value.to_string()]);
        }
        assert_eq!(
            t.to_csv(),
            "name\n' =cmd|' /C calc'!A0\n'\t+1\n\"'\r\n@SUM(A1)\"\n'  -x\n\"semi;=1+1\"\n plain\n"
        );
    }

    #[test]
    fn money_keeps_twelve_decimals() {
        assert_eq!(usd(Decimal::new(125, 2)), "1.250000000000");
        assert_eq!(usd(Decimal::new(1, 12)), "0.000000000001");
        assert_eq!(usd(Decimal::from(500)), "500.000000000000");
        assert_eq!(usd(Decimal::new(-25, 2)), "-0.250000000000");
        assert_eq!(usd("0.75000000".parse().unwrap()), "0.750000000000");
        assert_eq!(usd_or_empty(None), "");
    }

    #[test]
    fn a_table_without_rows_is_its_header() {
        assert_eq!(Table::new(["a", "b"]).to_csv(), "a,b\n");
        assert_eq!(Table::new(Vec::<String>::new()).to_csv(), "\n");
    }
}
