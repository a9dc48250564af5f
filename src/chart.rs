//! The funnel chart sent to Telegram: a bar per step with its entries (a
//! person's first visit of a day to the step), the rate to the next step under each gap, and the step funnelfix
//! works on in another colour. Drawn in-process with an embedded font, so it
//! renders the same in a bare container; pure: same report, same pixels.

use std::sync::Once;

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::funnel::FunnelReport;
use crate::text::pct;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 450;
const FONT: &str = "funnelfix-sans";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

pub(crate) const BAR: RGBColor = RGBColor(76, 120, 168);
pub(crate) const CHOSEN: RGBColor = RGBColor(228, 87, 86);
pub(crate) const INK: RGBColor = RGBColor(40, 40, 40);
pub(crate) const MUTED: RGBColor = RGBColor(120, 120, 120);

/// Registers the embedded font, also as plotters' default family (axis
/// labels), so no chart depends on the fonts of the machine.
pub(crate) fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        for name in [FONT, "sans-serif"] {
            if plotters::style::register_font(name, FontStyle::Normal, FONT_BYTES).is_err() {
                result = Err(anyhow::anyhow!("the embedded chart font is unreadable"));
            }
        }
    });
    result
}

/// The chart as PNG bytes.
pub fn funnel_chart(report: &FunnelReport) -> Result<Vec<u8>> {
    register_font()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(report, &mut pixels).context("drawing the funnel chart")?;
    encode_png(&pixels, WIDTH, HEIGHT)
}

fn draw(report: &FunnelReport, pixels: &mut [u8]) -> Result<()> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let reached = &report.counts.entries;
    let names: Vec<&str> = report
        .steps
        .iter()
        .map(|s| s.name.as_str())
        .chain(report.steps.last().map(|s| s.next_name.as_str()))
        .collect();
    let n = reached.len().max(1) as i32;
    let top = reached.iter().copied().max().unwrap_or(0).max(1) as f64;
    let chosen = report.choice.as_ref().map(|c| c.step);
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{e}");

    root.draw(&Text::new(
        format!(
            "Funnel {}: daily entries per step; overall {} (product of the step rates)",
            report.funnel,
            pct(report.overall)
        ),
        (20, 14),
        font(22.0, &INK),
    ))
    .map_err(err)?;

    // Plot area: bars from y = 60 to y = 340, labels below.
    let (left, right, bar_top, bar_bottom) = (30, WIDTH as i32 - 30, 60, 340);
    let slot = (right - left) / n;
    let bar_width = slot * 3 / 5;
    for (i, &count) in reached.iter().enumerate() {
        let x0 = left + slot * i as i32 + (slot - bar_width) / 2;
        let height = ((bar_bottom - bar_top) as f64 * count as f64 / top).round() as i32;
        let colour = if chosen == Some(i) { CHOSEN } else { BAR };
        root.draw(&Rectangle::new(
            [(x0, bar_bottom - height), (x0 + bar_width, bar_bottom)],
            colour.filled(),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            count.to_string(),
            (x0, (bar_bottom - height - 18).max(bar_top - 18)),
            font(15.0, &INK),
        ))
        .map_err(err)?;
        let name = names.get(i).copied().unwrap_or("");
        root.draw(&Text::new(
            shorten(name, 16),
            (x0, bar_bottom + 8),
            font(14.0, &INK),
        ))
        .map_err(err)?;
    }
    // The rate of each transition, between its two bars.
    for s in &report.steps {
        let x = left + slot * (s.index as i32 + 1) - 24;
        let colour = if chosen == Some(s.index) {
            &CHOSEN
        } else {
            &MUTED
        };
        root.draw(&Text::new(
            format!("→ {}", pct(s.rate)),
            (x, bar_bottom + 34),
            font(14.0, colour),
        ))
        .map_err(err)?;
    }
    if let Some(c) = chosen
        && let Some(s) = report.steps.get(c)
    {
        root.draw(&Text::new(
            shorten(
                &format!(
                    "working on: {} → {} ({} of {}, 95% {}–{})",
                    s.name,
                    s.next_name,
                    s.converted,
                    s.entrants,
                    pct(s.low),
                    pct(s.high)
                ),
                90,
            ),
            (20, HEIGHT as i32 - 40),
            font(16.0, &CHOSEN),
        ))
        .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

pub(crate) fn font(size: f64, colour: &'static RGBColor) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(colour)
}

pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

pub(crate) fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding the chart")?;
    writer.write_image_data(rgb).context("encoding the chart")?;
    writer.finish().context("encoding the chart")?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::funnel::{Choice, FunnelCounts, StepRate};

    /// The report of the chart kept in tests/fixtures/funnel_chart.png.
    pub fn sample() -> FunnelReport {
        let step = |index: usize, name: &str, next: &str, entrants: u64, converted: u64| {
            let (low, high) = crate::funnel::rates::wilson(converted, entrants);
            StepRate {
                index,
                name: name.into(),
                next_name: next.into(),
                entrants,
                converted,
                rate: converted as f64 / entrants as f64,
                low,
                high,
                judged: true,
            }
        };
        FunnelReport {
            funnel: "signup".into(),
            counts: FunnelCounts {
                entries: vec![5000, 2250, 560, 336],
                converted: vec![2250, 560, 336],
            },
            steps: vec![
                step(0, "Visited homepage", "Viewed pricing", 5000, 2250),
                step(1, "Viewed pricing", "Started signup", 2250, 560),
                step(2, "Started signup", "Completed signup", 560, 336),
            ],
            overall: 336.0 / 5000.0,
            choice: Some(Choice {
                step: 1,
                reason: "lowest".into(),
                expected_conversions: 0.0,
            }),
            reason_none: None,
            evidence: None,
        }
    }

    pub(crate) fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let mut reader = png::Decoder::new(png_bytes).read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("a frame");
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    /// Compares a chart pixel by pixel with tests/fixtures/`name`
    /// (UPDATE_FIXTURES=1 writes it, to be looked at before committing).
    pub(crate) fn assert_matches_fixture(png_bytes: &[u8], name: &str, size: (u32, u32)) {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var("UPDATE_FIXTURES").is_ok() {
            std::fs::write(&path, png_bytes).expect("fixture written");
        }
        let fixture = std::fs::read(&path)
            .unwrap_or_else(|_| panic!("tests/fixtures/{name} (UPDATE_FIXTURES=1 to write it)"));
        let (info, pixels) = decode(png_bytes);
        assert_eq!((info.width, info.height), size);
        let (_, expected) = decode(&fixture);
        assert!(
            pixels == expected,
            "the chart differs from tests/fixtures/{name}; UPDATE_FIXTURES=1 after checking it"
        );
    }

    #[test]
    fn the_chart_matches_its_fixture() {
        let png_bytes = funnel_chart(&sample()).expect("a chart");
        assert_matches_fixture(&png_bytes, "funnel_chart.png", (WIDTH, HEIGHT));
    }

    #[test]
    fn the_chosen_step_is_drawn_in_its_own_colour() {
        let (_, pixels) = decode(&funnel_chart(&sample()).expect("a chart"));
        let colour_at = |x: u32, y: u32| {
            let i = ((y * WIDTH + x) * 3) as usize;
            RGBColor(pixels[i], pixels[i + 1], pixels[i + 2])
        };
        // Bar centres near the bottom of the plot: step 1 is the chosen one.
        let slot = (WIDTH - 60) / 4;
        let centre = |i: u32| 30 + slot * i + slot / 2;
        assert_eq!(colour_at(centre(0), 330), BAR);
        assert_eq!(colour_at(centre(1), 330), CHOSEN);
        assert_eq!(colour_at(centre(2), 330), BAR);
        // Heights follow the counts: the first bar is full, the last is short.
        assert_eq!(colour_at(centre(0), 65), BAR);
        assert_eq!(colour_at(centre(3), 300), WHITE);
    }

    #[test]
    fn an_empty_funnel_still_draws() {
        let mut r = sample();
        r.counts = FunnelCounts::empty(4);
        r.choice = None;
        assert!(funnel_chart(&r).is_ok());
    }
}
