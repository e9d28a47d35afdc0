//! `plan --svg FILE`: the ledger's plan as a picture. A panel of the calls sent so far, then, for
//! each limit of the quota, the planned calls in its trailing window over time against the
//! limit's count (a red line): the curve touches the line where that window sets the pace and
//! never crosses it.

use std::path::Path;
use std::time::Duration;

use fabraix_scheduler::{Instant, Quota};
use plotters::prelude::*;

use crate::exit::CliError;
use crate::human;
use crate::plan::{self, EXACT_PLAN_MAX};

/// Distinct slot times drawn at most (each is a step of every curve).
const MAX_STEPS: usize = 200_000;

/// Size of one panel, in SVG pixels.
const PANEL: (u32, u32) = (960, 280);

/// Calls that go at the same instant, as one step: (when, after now; how many).
type Run = (Duration, u64);

/// Draws the plan of `n` calls under `quota` from `now` into the SVG file `path`.
pub fn write_plan(path: &Path, quota: &Quota, now: Instant, n: u64) -> Result<(), CliError> {
    let shown = path.display();
    if n > EXACT_PLAN_MAX {
        return Err(CliError::new(format!(
            "--svg {shown}: draws plans of up to {} calls, not {}",
            human::count(EXACT_PLAN_MAX),
            human::count(n)
        )));
    }
    if path.is_dir() {
        return Err(CliError::new(format!(
            "--svg {shown} is a directory: give a file path"
        )));
    }
    let mut runs: Vec<Run> = Vec::new();
    for slot in plan::slots(quota, now, n, &[]) {
        let full = runs.len() == MAX_STEPS;
        match runs.last_mut() {
            Some((at, calls)) if *at == slot.at => *calls += 1,
            _ if full => {
                return Err(CliError::new(format!(
                "--svg {shown}: the plan has more than {} distinct call times; draw fewer calls",
                human::count(MAX_STEPS as u64)
            )))
            }
            _ => runs.push((slot.at, 1)),
        }
    }
    let svg = render(quota, n, &runs)
        .map_err(|e| CliError::new(format!("--svg {shown}: cannot draw the plan: {e}")))?;
    std::fs::write(path, svg).map_err(|e| CliError::new(format!("cannot write --svg {shown}: {e}")))
}

/// The unit the time axis reads in: seconds, minutes or hours, and its length in seconds.
fn unit(span_secs: f64) -> (&'static str, f64) {
    if span_secs <= 300.0 {
        ("s", 1.0)
    } else if span_secs <= 3.0 * 3_600.0 {
        ("min", 60.0)
    } else {
        ("h", 3_600.0)
    }
}

fn render(quota: &Quota, n: u64, runs: &[Run]) -> Result<String, String> {
    let last = runs.last().map_or(0.0, |r| r.0.as_secs_f64());
    // An all-at-once plan is drawn over its shortest window.
    let span = if last > 0.0 {
        last * 1.05
    } else {
        quota
            .limits()
            .first()
            .map_or(1.0, |l| l.window().as_secs_f64())
    };
    let (unit, per) = unit(span);
    let x_max = span / per;
    let mut out = String::new();
    {
        let panels = 1 + quota.limits().len();
        let height = PANEL.1 * u32::try_from(panels).map_err(|e| e.to_string())?;
        let root = SVGBackend::with_string(&mut out, (PANEL.0, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((panels, 1));
        let mut sent = 0u64;
        let mut cumulative = vec![(0.0, 0.0)];
        for &(at, calls) in runs {
            let x = at.as_secs_f64() / per;
            cumulative.push((x, sent as f64));
            sent += calls;
            cumulative.push((x, sent as f64));
        }
        cumulative.push((x_max, sent as f64));
        let caption = format!(
            "{} under {}: calls sent (the ledger's plan)",
            human::count_of(n, "call", "calls"),
            quota
        );
        panel(
            &areas[0],
            &caption,
            unit,
            x_max,
            n as f64,
            &cumulative,
            None,
        )?;
        for (area, limit) in areas[1..].iter().zip(quota.limits()) {
            let window = limit.window();
            let points = in_window(runs, window, per, x_max);
            let caption = format!(
                "calls in any {} window, against the limit of {}",
                human::window(window),
                human::count(u64::from(limit.count()))
            );
            let top = f64::from(limit.count());
            panel(area, &caption, unit, x_max, top, &points, Some(top))?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The planned calls in the trailing window `(t − window, t]` as a step curve, in axis units.
fn in_window(runs: &[Run], window: Duration, per: f64, x_max: f64) -> Vec<(f64, f64)> {
    let mut points = vec![(0.0, 0.0)];
    let (mut added, mut removed) = (0usize, 0usize);
    let mut held = 0u64;
    loop {
        let add = runs.get(added).map(|r| r.0);
        let remove = runs.get(removed).map(|r| r.0.saturating_add(window));
        let t = match (add, remove) {
            (Some(a), Some(r)) => a.min(r),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => break,
        };
        let x = t.as_secs_f64() / per;
        if x > x_max {
            break;
        }
        let before = held;
        // A call leaves the window W after it went, before the calls of that instant come in.
        while runs
            .get(removed)
            .is_some_and(|r| r.0.saturating_add(window) <= t)
        {
            held -= runs[removed].1;
            removed += 1;
        }
        while runs.get(added).is_some_and(|r| r.0 <= t) {
            held += runs[added].1;
            added += 1;
        }
        points.push((x, before as f64));
        points.push((x, held as f64));
    }
    let end = points.last().map_or(0.0, |p| p.1);
    points.push((x_max, end));
    points
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    unit: &str,
    x_max: f64,
    top: f64,
    points: &[(f64, f64)],
    limit: Option<f64>,
) -> Result<(), String> {
    let y_max = (top * 1.15).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(format!("time after now ({unit})"))
        .y_desc("calls")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
    if let Some(count) = limit {
        chart
            .draw_series(LineSeries::new(
                [(0.0, count), (x_max, count)],
                RED.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label("the limit")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    }
    // The curve over the limit's line: where the window is full, the curve is what shows.
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(1),
        ))
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_curve_counts_the_calls_of_the_trailing_window() {
        // 2 at 0 s, 2 at 1.1 s, under 2/1s: the window holds 2, then 0 at 1 s, then 2 again.
        let runs = [(Duration::ZERO, 2), (Duration::from_millis(1_100), 2)];
        let p = in_window(&runs, Duration::from_secs(1), 1.0, 3.0);
        let at = |x: f64| {
            p.iter()
                .rev()
                .find(|(px, _)| *px <= x)
                .map(|&(_, y)| y)
                .unwrap()
        };
        assert_eq!(at(0.5), 2.0);
        assert_eq!(at(1.05), 0.0);
        assert_eq!(at(1.5), 2.0);
        assert_eq!(at(2.5), 0.0);
        assert!(p.iter().all(|&(_, y)| y <= 2.0));
    }
}
