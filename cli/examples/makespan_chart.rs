//! The makespan study as a picture: reads the tables `examples/makespan.rs` prints and draws, for
//! each quota, five strategies' makespan over the model's minimum (percent) per server model and
//! batch size.
//!
//! ```sh
//! cargo run --release --example makespan \
//!   | cargo run --release -p fabraix-sched --example makespan_chart -- makespan.svg
//! ```
//!
//! The scale is logarithmic, so that +0.2 % and +65 % can both be read. A cell within 0.01 % of
//! the minimum is drawn at the axis's floor and shows no bar. Rows whose minimum is 0 s (every call
//! fits in the first window) are left out: there is nothing to be late against.

use std::io::Read;

use plotters::prelude::*;

/// The axis's floor, in percent over the minimum: a cell of +0.00 % is drawn there.
const FLOOR_PERCENT: f64 = 0.01;

/// The axis's top, in percent: well above the largest cell (about +300 %), leaving room for the
/// legend.
const TOP_PERCENT: f64 = 30_000.0;

/// Size of one quota's panel, in SVG pixels.
const PANEL: (u32, u32) = (1280, 520);

/// The strategies drawn, as the study's column headers name them, with their colours.
const SERIES: [(&str, RGBColor); 5] = [
    ("scheduler", RGBColor(31, 119, 180)),
    ("scheduler, token-bucket semantics", RGBColor(158, 202, 225)),
    ("fire-all + backoff", RGBColor(214, 39, 40)),
    ("governor stacked", RGBColor(255, 127, 14)),
    ("governor 1 bucket", RGBColor(44, 160, 44)),
];

/// One quota's table: its title, its column headers, its rows of cells.
struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("makespan_chart: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: makespan_chart OUT.svg  (the study's output on standard input)")?;
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    let tables: Vec<Table> = tables(&text)
        .into_iter()
        .filter(|t| t.headers.first().is_some_and(|h| h == "server model"))
        .collect();
    if tables.is_empty() {
        return Err("no table with a \"server model\" column on standard input: pipe the output of `cargo run --release --example makespan`".into());
    }
    let svg = render(&tables)?;
    std::fs::write(&out, svg).map_err(|e| format!("cannot write {out}: {e}"))?;
    eprintln!("wrote {out} ({} panels)", tables.len());
    Ok(())
}

/// Every markdown table of `text`, titled by the heading above it.
fn tables(text: &str) -> Vec<Table> {
    let mut found = Vec::new();
    let mut title = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(heading) = line.strip_prefix('#') {
            title = heading.trim_start_matches('#').trim().to_string();
            continue;
        }
        if !line.starts_with('|') || !lines.peek().is_some_and(|l| l.starts_with("|---")) {
            continue;
        }
        lines.next();
        let headers = cells(line);
        let mut rows = Vec::new();
        while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
            rows.push(cells(row));
        }
        found.push(Table {
            title: title.clone(),
            headers,
            rows,
        });
    }
    found
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// The percent over the minimum in a cell such as `961.6 s (+0.17%) / 0`; `None` for `—`.
fn percent_over(cell: &str) -> Option<f64> {
    let start = cell.find("(+")? + 2;
    let end = start + cell[start..].find('%')?;
    cell[start..end].parse().ok()
}

/// One bar group: its label (`model N`) and each drawn strategy's percent over the minimum.
struct Group {
    label: String,
    values: Vec<Option<f64>>,
}

fn groups(table: &Table) -> Vec<Group> {
    let column = |name: &str| table.headers.iter().position(|h| h == name);
    let columns: Vec<Option<usize>> = SERIES.iter().map(|(name, _)| column(name)).collect();
    table
        .rows
        .iter()
        .filter(|row| row.get(2).is_some_and(|min| min != "0.0 s"))
        .map(|row| Group {
            label: format!(
                "{} {}",
                row.first().map_or("", String::as_str),
                row.get(1).map_or("", String::as_str)
            ),
            values: columns
                .iter()
                .map(|c| {
                    c.and_then(|i| row.get(i))
                        .and_then(|cell| percent_over(cell))
                })
                .collect(),
        })
        .collect()
}

fn render(tables: &[Table]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let panels = u32::try_from(tables.len()).map_err(|e| e.to_string())?;
        let root =
            SVGBackend::with_string(&mut svg, (PANEL.0, PANEL.1 * panels)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        for (area, table) in root.split_evenly((tables.len(), 1)).iter().zip(tables) {
            panel(area, table)?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    table: &Table,
) -> Result<(), String> {
    let groups = groups(table);
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    let n = groups.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{}: makespan over the minimum (no bar: within 0.01 %)",
                table.title
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..n, (FLOOR_PERCENT..TOP_PERCENT).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| label_at(&labels, *x))
        .y_labels(8)
        .y_label_formatter(&|y| format!("{y}%"))
        .y_desc("over the minimum (log scale)")
        .draw()
        .map_err(|e| e.to_string())?;
    let width = 0.8 / SERIES.len() as f64;
    for (s, (name, colour)) in SERIES.iter().enumerate() {
        let bars = groups.iter().enumerate().filter_map(|(g, group)| {
            let value = group.values[s]?.max(FLOOR_PERCENT);
            let x0 = g as f64 + 0.1 + s as f64 * width;
            Some(Rectangle::new(
                [(x0, FLOOR_PERCENT), (x0 + width * 0.9, value)],
                colour.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// The group label under the middle of group `⌊x⌋`; nothing at the groups' edges.
fn label_at(labels: &[String], x: f64) -> String {
    let middle = x.fract() - 0.5;
    if middle.abs() > 0.01 || x < 0.0 {
        return String::new();
    }
    labels.get(x.floor() as usize).cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUDY: &str = "### Development (60/1m,1000/1h)\n\n\
| server model | N | minimum | scheduler | fire-all + backoff |\n\
|---|---:|---:|---|---|\n\
| fixed | 100 | 60.0 s | 60.1 s (+0.17%) / 0 | 108.6 s (+81.01%) / 311 |\n\
| token-bucket | 100 | 0.0 s | 0.0 s (+0.00%) / 0 | — |\n";

    #[test]
    fn a_study_table_becomes_bar_groups_without_its_zero_minimum_rows() {
        let tables = tables(STUDY);
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].title, "Development (60/1m,1000/1h)");
        let groups = groups(&tables[0]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].label, "fixed 100");
        assert_eq!(groups[0].values[0], Some(0.17));
        assert_eq!(groups[0].values[2], Some(81.01));
        assert_eq!(groups[0].values[1], None, "a column the study lacks");
    }

    #[test]
    fn a_dash_or_a_cell_without_a_percent_is_no_value() {
        assert_eq!(percent_over("—"), None);
        assert_eq!(percent_over("3604.1 s (+255.11%) / 5"), Some(255.11));
    }
}
