//! The live progress bar (indicatif) on stderr, shown only when stderr is a terminal so logs
//! and pipes stay clean. Updated by the main thread from relaxed counters, ten times a second:
//! the workers never touch it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar, or nothing.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    by_time: bool,
}

impl Progress {
    /// A bar for a phase named `name` that ends after `count` handshakes or `duration`, when
    /// `enabled` and stderr is a terminal.
    pub fn new(enabled: bool, name: &str, count: Option<u64>, duration: Option<Duration>) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self {
                bar: None,
                by_time: false,
            };
        }
        // A duration is the bound that usually ends a churn; a hold has only its count.
        let (len, by_time) = match (count, duration) {
            (_, Some(d)) => (d.as_millis() as u64, true),
            (Some(n), None) => (n, false),
            (None, None) => (0, false),
        };
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let template = format!("{name:>6} [{{elapsed_precise}}] {{wide_bar}} {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        Self {
            bar: Some(bar),
            by_time,
        }
    }

    /// Shows the counts so far.
    pub fn update(&self, ok: u64, failed: u64) {
        if let Some(bar) = &self.bar {
            let elapsed = bar.elapsed();
            if self.by_time {
                bar.set_position(elapsed.as_millis() as u64);
            } else {
                bar.set_position(ok + failed);
            }
            let rate = ok as f64 / elapsed.as_secs_f64().max(1e-3);
            bar.set_message(format!("{ok} ok, {failed} errors, {rate:.0}/s"));
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
