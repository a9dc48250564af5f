//! The watch chart sent with each verdict: the watched step's rate per day
//! before and after the merge (daily entries that went on, right-censored,
//! the watch's own estimand), the rate expected from the baseline, and the
//! always-valid interval of the relative change as each day's entrants came
//! in, against the revert threshold. Pure: the same data, the same pixels;
//! [`for_experiment`] reads what it needs from the store.

use anyhow::{Context, Result};
use chrono::{Datelike, NaiveDate};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::chart::{self, BAR, CHOSEN, INK, MUTED, font, shorten};
use crate::config::Thresholds;
use crate::experiment::{self, ExperimentId, State};
use crate::stats::{self, Counts, RevertRule, WEEKDAYS, WatchInput};
use crate::store::{Experiment, Store, WatchDays};
use crate::text::{pct, signed_pct};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 640;

/// Days before the merge, drawn in grey; the interval's band, light.
const BEFORE: RGBColor = RGBColor(150, 150, 150);
const BAND: RGBColor = RGBColor(178, 201, 226);
const KEPT: RGBColor = RGBColor(46, 125, 50);
/// The expected rate.
const EXPECTED: RGBColor = RGBColor(230, 145, 56);

/// One watched day: its counts, and the estimate with its always-valid
/// interval once its entrants were added to those of the days before.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedDay {
    pub date: NaiveDate,
    pub counts: Counts,
    pub change: f64,
    pub interval: (f64, f64),
}

/// Everything the chart shows.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchChart {
    pub experiment: ExperimentId,
    pub step: String,
    pub next_step: String,
    pub merged_on: NaiveDate,
    /// The date of the last entrants the watch counts: the charts span the
    /// whole watch, however far it got.
    pub watch_until: NaiveDate,
    pub baseline: Vec<(NaiveDate, Counts)>,
    pub watch: Vec<WatchedDay>,
    /// The pooled baseline rate.
    pub p_baseline: f64,
    /// The baseline re-weighted to the watched weekdays, as of the last day.
    pub p_expected: f64,
    /// `−max_relative_drop`: a change at or below it may be reverted.
    pub revert_at: f64,
    pub state: State,
    /// The verdict, or where the watch stands.
    pub verdict: String,
}

/// The chart's data for a merged experiment from its stored baseline and
/// daily counts, computed as the monitor computes the watch; `None` for an
/// experiment that was never merged.
pub fn chart_data(e: &Experiment, days: &WatchDays, t: &Thresholds) -> Option<WatchChart> {
    let merged_at = e.merged_at?;
    let baseline: [Counts; WEEKDAYS] = e
        .baseline
        .as_deref()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or_default();
    // Watched with early looks, the test ran at their share of α: so do
    // the intervals drawn (each day's counts are matured entries only).
    let recent = crate::lifecycle::early_baseline(e).map(|b| stats::RecentEntries {
        baseline: b.counts,
        post: [Counts::default(); WEEKDAYS],
    });
    let input = WatchInput {
        recent,
        ..WatchInput::configured(baseline, [Counts::default(); WEEKDAYS], t)
    };
    let by_weekday: Vec<(usize, Counts)> = days
        .watch
        .iter()
        .map(|(date, c)| (date.weekday().num_days_from_monday() as usize, *c))
        .collect();
    let looks = stats::assess_each_day(&input, &by_weekday, &RevertRule::configured(t));
    let watch = days
        .watch
        .iter()
        .zip(&looks)
        .map(|((date, counts), a)| WatchedDay {
            date: *date,
            counts: *counts,
            change: a.relative_change,
            interval: a.relative_interval,
        })
        .collect();
    let total = baseline.iter().fold((0u64, 0u64), |(n, x), c| {
        (n + c.entrants, x + c.conversions)
    });
    let p_baseline = if total.0 > 0 {
        total.1 as f64 / total.0 as f64
    } else {
        0.0
    };
    Some(WatchChart {
        experiment: e.id,
        step: e.step_name.clone(),
        next_step: e.next_step_name.clone(),
        merged_on: merged_at.date_naive(),
        watch_until: experiment::observed_entrants(
            merged_at,
            t.observation,
            experiment::settle_for(t.observation),
        )
        .1
        .date_naive(),
        baseline: days.baseline.clone(),
        watch,
        p_baseline,
        p_expected: looks.last().map_or(p_baseline, |a| a.p_expected),
        revert_at: -t.max_relative_drop,
        state: e.state,
        verdict: e
            .verdict
            .clone()
            .unwrap_or_else(|| format!("{}: no verdict yet", e.state)),
    })
}

/// The chart of a stored experiment as PNG bytes; `None` if it was never merged.
pub fn for_experiment(store: &Store, t: &Thresholds, e: &Experiment) -> Result<Option<Vec<u8>>> {
    let days = store.watch_days(e.id)?;
    chart_data(e, &days, t).map(|c| watch_chart(&c)).transpose()
}

/// The chart as PNG bytes.
pub fn watch_chart(c: &WatchChart) -> Result<Vec<u8>> {
    chart::register_font()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(c, &mut pixels).context("drawing the watch chart")?;
    chart::encode_png(&pixels, WIDTH, HEIGHT)
}

fn rate(c: &Counts) -> f64 {
    if c.entrants == 0 {
        0.0
    } else {
        c.conversions as f64 / c.entrants as f64
    }
}

/// Days from the merge's date to `date`.
fn day(c: &WatchChart, date: NaiveDate) -> f64 {
    (date - c.merged_on).num_days() as f64
}

fn err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn draw(c: &WatchChart, pixels: &mut [u8]) -> Result<()> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    root.draw(&Text::new(
        shorten(
            &format!(
                "Experiment #{} · {} → {}",
                c.experiment, c.step, c.next_step
            ),
            80,
        ),
        (20, 12),
        font(22.0, &INK),
    ))
    .map_err(err)?;
    root.draw(&Text::new(
        format!(
            "Daily entries that went on, per day of entry; merged {}",
            c.merged_on
        ),
        (20, 42),
        font(14.0, &MUTED),
    ))
    .map_err(err)?;
    let rates = root.margin(66, 0, 0, 0);
    let (rates, rest) = rates.split_vertically(290);
    let (changes, footer) = rest.split_vertically(230);
    draw_rates(c, &rates)?;
    draw_changes(c, &changes)?;
    let colour = match c.state {
        State::Reverted | State::Reverting => &CHOSEN,
        State::Kept => &KEPT,
        _ => &INK,
    };
    footer
        .draw(&Text::new(
            shorten(&c.verdict, 105),
            (20, 12),
            font(15.0, colour),
        ))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The rate per day, before (grey) and after (blue) the merge, with the
/// baseline's rate and the rate expected after it.
fn draw_rates(c: &WatchChart, area: &DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()> {
    let dates: Vec<NaiveDate> = c
        .baseline
        .iter()
        .map(|(d, _)| *d)
        .chain(c.watch.iter().map(|w| w.date))
        .collect();
    let first = dates.iter().map(|d| day(c, *d)).fold(0.0, f64::min);
    let last = dates
        .iter()
        .map(|d| day(c, *d))
        .fold(day(c, c.watch_until), f64::max);
    let top = c
        .baseline
        .iter()
        .map(|(_, n)| rate(n))
        .chain(c.watch.iter().map(|w| rate(&w.counts)))
        .chain([c.p_baseline, c.p_expected])
        .fold(0.0, f64::max);
    let top = (top * 1.25).clamp(0.01, 1.0);
    let mut chart = panel(area, (first - 0.7)..(last + 0.7), 0.0..top, 0, &|y| {
        format!("{:.0}%", y * 100.0)
    })?;
    date_labels(c, area, &chart, &dates, 0.0)?;
    let baseline: Vec<(f64, f64)> = c
        .baseline
        .iter()
        .map(|(d, n)| (day(c, *d), rate(n)))
        .collect();
    let watch: Vec<(f64, f64)> = c
        .watch
        .iter()
        .map(|w| (day(c, w.date), rate(&w.counts)))
        .collect();
    chart
        .draw_series([PathElement::new(
            vec![(0.0, 0.0), (0.0, top)],
            MUTED.stroke_width(1),
        )])
        .map_err(err)?;
    if let (Some(a), Some(b)) = (baseline.first(), baseline.last()) {
        chart
            .draw_series([DashedPathElement::new(
                vec![(a.0, c.p_baseline), (b.0, c.p_baseline)],
                6,
                4,
                BEFORE.stroke_width(2),
            )])
            .map_err(err)?;
    }
    if let (Some(a), Some(b)) = (watch.first(), watch.last()) {
        chart
            .draw_series([DashedPathElement::new(
                vec![(a.0 - 0.4, c.p_expected), (b.0 + 0.4, c.p_expected)],
                6,
                4,
                EXPECTED.stroke_width(2),
            )])
            .map_err(err)?;
    }
    for (points, colour) in [(&baseline, BEFORE), (&watch, BAR)] {
        chart
            .draw_series([PathElement::new(points.clone(), colour.stroke_width(2))])
            .map_err(err)?;
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))
            .map_err(err)?;
    }
    let legend = [
        (format!("before: {} on average", pct(c.p_baseline)), &BEFORE),
        ("after the merge".to_string(), &BAR),
        (
            format!("expected after: {} (weekday-weighted)", pct(c.p_expected)),
            &EXPECTED,
        ),
    ];
    let mut x = 80;
    for (label, colour) in legend {
        area.draw(&Text::new(label.clone(), (x, 2), font(13.0, colour)))
            .map_err(err)?;
        x += 16 + 7 * label.chars().count() as i32;
    }
    Ok(())
}

/// The relative change against the expected rate with its always-valid
/// interval after each watched day, and the revert threshold.
fn draw_changes(c: &WatchChart, area: &DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()> {
    // The interval starts as wide as a rate allows: show ±60% at most, and
    // always the threshold and no change.
    let low = c
        .watch
        .iter()
        .map(|w| w.interval.0)
        .chain([c.revert_at * 1.5, -0.05])
        .fold(0.0, f64::min)
        .max(-0.6);
    let high = c
        .watch
        .iter()
        .map(|w| w.interval.1)
        .chain([0.05])
        .fold(0.0, f64::max)
        .min(0.6);
    let dates: Vec<NaiveDate> = c.watch.iter().map(|w| w.date).collect();
    let first = dates.first().map_or(0.0, |d| day(c, *d)).min(0.0);
    let last = dates
        .last()
        .map_or(0.0, |d| day(c, *d))
        .max(day(c, c.watch_until));
    let mut chart = panel(
        area,
        (first - 0.7)..(last + 0.7),
        low..high,
        26,
        &|y| match (y * 100.0).round() {
            0.0 => "0%".to_string(),
            v => format!("{v:+.0}%"),
        },
    )?;
    date_labels(c, area, &chart, &dates, low)?;
    let span = (first - 0.7, last + 0.7);
    chart
        .draw_series([PathElement::new(
            vec![(span.0, 0.0), (span.1, 0.0)],
            MUTED.stroke_width(1),
        )])
        .map_err(err)?;
    chart
        .draw_series([DashedPathElement::new(
            vec![(span.0, c.revert_at), (span.1, c.revert_at)],
            8,
            5,
            CHOSEN.stroke_width(2),
        )])
        .map_err(err)?;
    for w in &c.watch {
        let x = day(c, w.date);
        let (lo, hi) = (w.interval.0.clamp(low, high), w.interval.1.clamp(low, high));
        chart
            .draw_series([Rectangle::new(
                [(x - 0.25, lo), (x + 0.25, hi)],
                BAND.filled(),
            )])
            .map_err(err)?;
        if (low..=high).contains(&w.change) {
            chart
                .draw_series([Circle::new((x, w.change), 4, BAR.filled())])
                .map_err(err)?;
        }
    }
    area.draw(&Text::new(
        format!(
            "Change against the expected rate, with its always-valid interval after each day; revert threshold {}",
            signed_pct(c.revert_at)
        ),
        (80, 2),
        font(13.0, &INK),
    ))
    .map_err(err)?;
    Ok(())
}

type Panel<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A plot of days (from the merge) against `y`, with horizontal grid lines
/// labelled by `y_label`; dates are drawn by [`date_labels`].
fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    margin_top: u32,
    y_label: &dyn Fn(&f64) -> String,
) -> Result<Panel<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .margin_left(10)
        .margin_right(30)
        .margin_top(margin_top)
        .y_label_area_size(60)
        .x_label_area_size(24)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(5)
        .y_label_formatter(y_label)
        .label_style(font(13.0, &INK))
        .light_line_style(WHITE)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// Dates under the x axis, from the first of `dates` (or the merge) to the
/// end of the watch, spaced so they do not overlap.
fn date_labels(
    c: &WatchChart,
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    chart: &Panel<'_, '_>,
    dates: &[NaiveDate],
    bottom: f64,
) -> Result<()> {
    let first = dates.iter().copied().fold(c.merged_on, NaiveDate::min);
    let last = dates.iter().copied().fold(c.watch_until, NaiveDate::max);
    let days = (last - first).num_days().max(1);
    let every = (days / 10 + 1).max(1);
    // Drawn on the panel, not the plot, which would clip them.
    let (left, top) = area.get_base_pixel();
    let mut date = first;
    while date <= last {
        let (x, y) = chart.backend_coord(&(day(c, date), bottom));
        let label = date.format("%b %d").to_string();
        area.draw(&Text::new(
            label,
            (x - left - 18, y - top + 6),
            font(12.0, &MUTED),
        ))
        .map_err(err)?;
        date += chrono::Duration::days(every);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::tests::{assert_matches_fixture, decode};
    use crate::text::tests::thresholds;

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    /// A 28-day baseline at about 25% with a weekend dip, then 14 days at
    /// about 21%: a drop the watch reverted.
    pub(crate) fn sample() -> (Experiment, WatchDays) {
        let merged: NaiveDate = d("2026-03-02");
        let weekday_rate = [0.26, 0.26, 0.25, 0.25, 0.24, 0.22, 0.22];
        let mut baseline = Vec::new();
        let mut weekdays = [Counts::default(); WEEKDAYS];
        for i in (1..=28).rev() {
            let date = merged - chrono::Duration::days(i);
            let w = date.weekday().num_days_from_monday() as usize;
            let n = 400 + (i as u64 * 37) % 60;
            let x = (n as f64 * weekday_rate[w] * (1.0 + ((i % 5) as f64 - 2.0) / 40.0)) as u64;
            weekdays[w] = Counts::new(weekdays[w].entrants + n, weekdays[w].conversions + x);
            baseline.push((date, Counts::new(n, x)));
        }
        let watch = (0..14)
            .map(|i| {
                let date = merged + chrono::Duration::days(i);
                let w = date.weekday().num_days_from_monday() as usize;
                let n = 380 + (i as u64 * 53) % 70;
                let x = (n as f64 * weekday_rate[w] * 0.84) as u64;
                (date, Counts::new(n, x))
            })
            .collect();
        let mut e = crate::store::sample_experiment();
        e.state = State::Reverted;
        e.merged_at = Some("2026-03-02T10:00:00Z".parse().expect("time"));
        e.baseline = Some(serde_json::to_string(&weekdays).expect("json"));
        e.verdict = Some(
            "reverted: −16.0% relative change (always-valid p = 0.0042), 20.2% vs 24.1% expected, 1103 conversions"
                .into(),
        );
        (e, WatchDays { baseline, watch })
    }

    #[test]
    fn the_chart_matches_its_fixture() {
        let (e, days) = sample();
        let data = chart_data(&e, &days, &thresholds()).expect("merged");
        let png = watch_chart(&data).expect("a chart");
        assert_matches_fixture(&png, "watch_chart.png", (WIDTH, HEIGHT));
    }

    #[test]
    fn each_day_is_judged_as_the_monitor_judges_the_watch() {
        let (e, days) = sample();
        let t = thresholds();
        let data = chart_data(&e, &days, &t).expect("merged");
        assert_eq!(data.watch.len(), 14);
        assert_eq!(data.revert_at, -0.10);
        // The last day's figures are those of one assessment of all the
        // watched days, as the monitor's last look made it.
        let baseline: [Counts; WEEKDAYS] =
            serde_json::from_str(e.baseline.as_deref().expect("baseline")).expect("json");
        let mut post = [Counts::default(); WEEKDAYS];
        for (date, c) in &days.watch {
            let w = date.weekday().num_days_from_monday() as usize;
            post[w] = Counts::new(
                post[w].entrants + c.entrants,
                post[w].conversions + c.conversions,
            );
        }
        let a = stats::assess(
            &WatchInput::configured(baseline, post, &t),
            &RevertRule::configured(&t),
        );
        let last = data.watch.last().expect("a day");
        assert_eq!(
            (last.change, last.interval),
            (a.relative_change, a.relative_interval)
        );
        assert_eq!(data.p_expected, a.p_expected);
        assert!(
            a.revert,
            "the sample is a drop the watch reverts: {}",
            a.why
        );
        // The interval narrowed from the first day to the last.
        let first = &data.watch[0];
        assert!(
            last.interval.1 - last.interval.0 < (first.interval.1 - first.interval.0) / 2.0,
            "{first:?} → {last:?}"
        );
    }

    #[test]
    fn a_watch_with_early_looks_draws_the_intervals_its_test_used() {
        let (e, days) = sample();
        let t = thresholds();
        let plain = chart_data(&e, &days, &t).expect("merged");
        let early = crate::lifecycle::EarlyBaseline {
            window: std::time::Duration::from_secs(3600),
            counts: serde_json::from_str(e.baseline.as_deref().expect("baseline")).expect("json"),
        };
        let e = Experiment {
            early_baseline: Some(serde_json::to_string(&early).expect("json")),
            ..e
        };
        let with_early = chart_data(&e, &days, &t).expect("merged");
        let (a, b) = (
            plain.watch.last().expect("a day"),
            with_early.watch.last().expect("a day"),
        );
        assert_eq!(a.change, b.change, "the same matured entries");
        // At a smaller α the always-valid interval is wider.
        assert!(
            b.interval.0 < a.interval.0 && b.interval.1 > a.interval.1,
            "{a:?} {b:?}"
        );
    }

    #[test]
    fn the_after_days_are_blue_and_the_threshold_red() {
        let (e, days) = sample();
        let data = chart_data(&e, &days, &thresholds()).expect("merged");
        let (_, pixels) = decode(&watch_chart(&data).expect("a chart"));
        let count = |colour: RGBColor| {
            pixels
                .chunks(3)
                .filter(|p| p == &[colour.0, colour.1, colour.2])
                .count()
        };
        assert!(
            count(BAR) > 500,
            "after-merge rates and estimates are drawn"
        );
        assert!(count(BEFORE) > 500, "baseline rates are drawn");
        assert!(count(BAND) > 500, "intervals are drawn");
        assert!(
            count(CHOSEN) > 500,
            "the threshold and the verdict are drawn"
        );
    }

    #[test]
    fn never_merged_has_no_chart_and_no_data_still_draws() {
        let (mut e, _) = sample();
        let t = thresholds();
        assert!(chart_data(&e, &WatchDays::default(), &t).is_some());
        let empty = chart_data(&e, &WatchDays::default(), &t).expect("merged");
        assert!(watch_chart(&empty).is_ok());
        e.merged_at = None;
        assert_eq!(chart_data(&e, &WatchDays::default(), &t), None);
    }
}
