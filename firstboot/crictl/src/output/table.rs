//! Tables as crictl prints them through Go's `text/tabwriter` with
//! minimum width 20, padding 3 and spaces: every column but the last is
//! padded to its widest cell plus 3 (at least 20 characters); the last
//! cell of a row is printed as it is.

/// Minimum width of a column.
const MIN_WIDTH: usize = 20;
/// Spaces after the widest cell of a column.
const PADDING: usize = 3;

/// A table being built row by row.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a row.
    pub fn add_row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The aligned text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let widths = self.column_widths();
        let mut out = String::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        }
        out
    }

    /// The width of each aligned column (all but each row's last cell).
    fn column_widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
                if widths.len() <= i {
                    widths.push(MIN_WIDTH);
                }
                widths[i] = widths[i].max(cell.chars().count() + PADDING);
            }
        }
        widths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_to_at_least_twenty() {
        let mut table = Table::new();
        table.add_row(["IMAGE", "TAG", "IMAGE ID", "SIZE"]);
        table.add_row([
            "registry.k8s.io/pause-like-image",
            "3.9",
            "0123456789abc",
            "1.23kB",
        ]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("TAG"), Some(35));
        assert_eq!(lines[0].find("IMAGE ID"), Some(55));
        assert_eq!(lines[0].find("SIZE"), Some(75));
        assert_eq!(lines[1].find("1.23kB"), Some(75));
        assert!(lines[1].ends_with("1.23kB"));
    }

    #[test]
    fn empty_table_prints_nothing() {
        assert_eq!(Table::new().render(), "");
    }
}
