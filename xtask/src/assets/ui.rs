//! Progress reporting: step lines on stderr, and bars and spinners when it is a terminal.

use std::io::{self, IsTerminal};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Step lines on stderr; bars and spinners only when stderr is a terminal.
pub(super) struct Ui {
    pub(super) tty: bool,
}

impl Ui {
    pub(super) fn detect() -> Self {
        Self {
            tty: io::stderr().is_terminal(),
        }
    }

    pub(super) fn step(&self, msg: &str) {
        eprintln!("assets: {msg}");
    }

    pub(super) fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        if !self.tty || len < (8 << 20) {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "  {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(msg.to_owned());
        bar
    }

    pub(super) fn spinner(&self, msg: &str) -> ProgressBar {
        if !self.tty {
            return ProgressBar::hidden();
        }
        let sp = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("  {spinner} {msg} ({elapsed})") {
            sp.set_style(style);
        }
        sp.set_message(msg.to_owned());
        sp.enable_steady_tick(Duration::from_millis(120));
        sp
    }
}
