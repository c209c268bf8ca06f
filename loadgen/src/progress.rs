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
        let (len, by_time) = match (count, duration) {
            (Some(n), _) => (n, false),
            (None, Some(d)) => (d.as_millis() as u64, true),
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
            if self.by_time {
                bar.set_position(bar.elapsed().as_millis() as u64);
            } else {
                bar.set_position(ok + failed);
            }
            bar.set_message(format!("{ok} ok, {failed} errors"));
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
