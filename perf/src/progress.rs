//! Progress: an indicatif bar on a terminal, plain periodic lines otherwise (logs, CI).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Reports the progress of the run's phases.
#[derive(Debug)]
pub struct Progress {
    state: RefCell<State>,
}

#[derive(Debug)]
struct State {
    tty: bool,
    bar: Option<(String, ProgressBar)>,
    last_line: Option<Instant>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Progress {
        Progress {
            state: RefCell::new(State {
                tty: std::io::stderr().is_terminal(),
                bar: None,
                last_line: None,
            }),
        }
    }

    /// `done` of `total` in `phase`.
    pub fn update(&self, phase: &str, done: u64, total: u64) {
        let mut s = self.state.borrow_mut();
        if s.tty {
            if s.bar.as_ref().is_none_or(|(p, _)| p != phase) {
                if let Some((_, b)) = s.bar.take() {
                    b.finish();
                }
                let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_message(phase.to_string());
                s.bar = Some((phase.to_string(), b));
            }
            if let Some((_, b)) = &s.bar {
                b.set_length(total);
                b.set_position(done.min(total));
            }
        } else {
            let due = s
                .last_line
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if due || done >= total {
                let pct = 100.0 * done as f64 / total.max(1) as f64;
                eprintln!("{phase}: {done}/{total} ({pct:.0}%)");
                s.last_line = Some(Instant::now());
            }
        }
    }

    /// Ends the current bar.
    pub fn finish(&self) {
        if let Some((_, b)) = self.state.borrow_mut().bar.take() {
            b.finish();
        }
    }
}
